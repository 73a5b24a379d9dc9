"""What every backbone gives the AttnMel heads, and how a backbone is made from its name
(the table of names: :mod:`.specs`): ``vgg16_bn`` and ``vgg16`` (the paper, :mod:`.vgg`),
``efficientnet_lite0``/``1``/``2`` and ``timm:MODEL`` (any timm model with ``features_only``
support, :mod:`.timm`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.backbones.specs import (
    DEFAULT_STRIDES,
    VGG_BACKBONES,
    check_backbone_name,
)

if TYPE_CHECKING:
    from torch import Tensor, nn


class Backbone(Protocol):
    """x (N, 3, S, S) → [F_a (N, C1, S/s1, S/s1), F_b (N, C2, S/s2, …), G (N, C3, S/s3, …)]."""

    channels: tuple[int, int, int]
    strides: tuple[int, int, int]

    def __call__(self, x: Tensor) -> list[Tensor]: ...


def make_backbone(
    backbone: str, width: float = 1.0, strides: tuple[int, int, int] = DEFAULT_STRIDES
) -> nn.Module:
    """A randomly initialised backbone (weights load later) that follows :class:`Backbone`."""
    check_backbone_name(backbone)
    if backbone in VGG_BACKBONES:
        from attnmel_cli.models.backbones.vgg import VGGBackbone

        if tuple(strides) != DEFAULT_STRIDES:
            raise AttnMelError(f"{backbone}: the gates sit on pool-3 and pool-4 (strides 8, 16)")
        return VGGBackbone(batch_norm=backbone == "vgg16_bn", width=width)
    if width != 1.0:
        raise AttnMelError(f"--width applies to the VGG backbones only, not {backbone}")
    from attnmel_cli.models.backbones.timm import TimmBackbone, resolve_timm_name

    return TimmBackbone(resolve_timm_name(backbone), strides=strides)


def backbone_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the pixels in [0, 1] that the backbone's ImageNet weights expect."""
    check_backbone_name(backbone)
    if backbone in VGG_BACKBONES:
        from attnmel_cli.config import IMAGENET_MEAN, IMAGENET_STD

        return IMAGENET_MEAN, IMAGENET_STD
    from attnmel_cli.models.backbones.timm import data_config, resolve_timm_name

    cfg = data_config(resolve_timm_name(backbone))
    return tuple(cfg["mean"]), tuple(cfg["std"])


def weights_refusal(weights_file: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a weights file, in one line. torch's own
    message advises loading it with ``weights_only=False``, which would run whatever code the
    file holds: never passed on."""
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return (f"{weights_file}: refused: it holds Python objects besides tensors, and "
                "unpickling them could run code; attnmel loads only plain tensors (a state dict, "
                "or a .safetensors file)")
    return f"{weights_file}: not a PyTorch state dict ({type(exc).__name__})"
