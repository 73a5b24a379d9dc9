"""Building models: a variant from training options (optionally ImageNet-initialised), or the
model a checkpoint's metadata describes (:func:`model_from_meta`, what checkpoint loading calls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.attnmel import AttnMelNet, check_image_size
from attnmel_cli.models.backbones.vgg import imagenet_state_dict


class ModelSpec(Protocol):
    """What a model is built from: a checkpoint's metadata has these fields."""

    arch: str
    backbone: str
    width: float
    image_size: int


def build_model(
    arch: str = "attnmel",
    backbone: str = "vgg16_bn",
    width: float = 1.0,
    *,
    pretrained: bool = False,
    weights_file: Path | None = None,
) -> AttnMelNet:
    """Build a variant; ``pretrained`` loads ImageNet weights into the backbone (width 1 only)."""
    model = AttnMelNet(arch, backbone, width)
    if pretrained or weights_file is not None:
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
    return model


def model_from_meta(meta: ModelSpec) -> AttnMelNet:
    """The model that checkpoint metadata describes (randomly initialised: its tensors follow)."""
    check_image_size(meta.image_size)
    return AttnMelNet(meta.arch, meta.backbone, meta.width)
