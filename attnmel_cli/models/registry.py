"""Building models: a variant from training options, or the model a checkpoint's metadata
describes (:func:`model_from_meta`, what checkpoint loading calls); randomly initialised, their
weights load later (ImageNet weights: :mod:`attnmel_cli.io.pretrained`).
"""

from __future__ import annotations

from typing import Protocol

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.attnmel import AttnMelNet, check_image_size
from attnmel_cli.models.backbones.specs import DEFAULT_STRIDES
from attnmel_cli.models.names import CLASSES


class ModelSpec(Protocol):
    """What a model is built from: a checkpoint's metadata has these fields."""

    arch: str
    backbone: str
    width: float
    image_size: int
    strides: tuple[int, int, int]
    classes: tuple[str, ...]


def build_model(
    arch: str = "attnmel",
    backbone: str = "vgg16_bn",
    width: float = 1.0,
    *,
    strides: tuple[int, int, int] = DEFAULT_STRIDES,
    classes: tuple[str, ...] = CLASSES,
) -> AttnMelNet:
    """A variant, randomly initialised (ImageNet weights, read from files, are loaded by
    :func:`attnmel_cli.io.pretrained.build_model`)."""
    return AttnMelNet(arch, backbone, width, strides, classes)


def parse_strides(text: str) -> tuple[int, int, int]:
    """``"8,16,32"`` → (8, 16, 32): three increasing strides (gated, gated, guiding)."""
    try:
        strides = tuple(int(v) for v in text.split(","))
    except ValueError:
        strides = ()
    if len(strides) != 3 or list(strides) != sorted(set(strides)) or strides[0] < 1:
        raise AttnMelError(f"--strides {text!r}: give three increasing strides, e.g. 8,16,32")
    return strides  # type: ignore[return-value]


def model_from_meta(meta: ModelSpec) -> AttnMelNet:
    """The model that checkpoint metadata describes (randomly initialised: its tensors follow)."""
    check_image_size(meta.image_size)
    return AttnMelNet(meta.arch, meta.backbone, meta.width, meta.strides, tuple(meta.classes))
