"""The paper's network (§2.1, Fig. 1–2) and its ablation baselines (§3.2).

Variants (``arch``):
- ``attnmel``   : VGG-16 without dense layers; attention gates on pool-3 and pool-4 guided by
                  pool-5 (Eq. 1–3); GAP of F̂3, F̂4 and G concatenated → linear → 2 classes.
- ``mel-cnn``   : the same concatenation of GAP(pool-3), GAP(pool-4), GAP(pool-5), no gates.
- ``vgg16-gap`` : GAP of pool-5 → linear (its class activation map is available, Zhou et al. 2016).
- ``vgg16``     : the original VGG-16 with its dense layers, 2 outputs.

``forward(x)`` takes ``x`` of shape (N, 3, S, S), S divisible by 32, and returns
``(logits, maps)``: logits (N, 2); maps holds ``pool3`` (N, 1, S/8, S/8) and ``pool4``
(N, 1, S/16, S/16) attention in [0, 1] for ``attnmel``, ``cam`` (N, 1, S/32, S/32) for
``vgg16-gap``, and nothing for the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnmel_cli.errors import AttnMelError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

ARCHS = ("attnmel", "mel-cnn", "vgg16-gap", "vgg16")
BACKBONES = ("vgg16_bn", "vgg16")
CLASSES = ("other", "melanoma")  # index 1 is the melanoma probability
ATTENTION_FEATURES = 256  # W_f and W_g have 256 filters (Eq. 1)
# torchvision's VGG-16 configuration "D": channels per conv, "M" = max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def _imagenet_weights(backbone: str) -> WeightsEnum:
    """torchvision's ImageNet weights entry (imported lazily: torchvision.models is slow)."""
    from torchvision.models import VGG16_BN_Weights, VGG16_Weights

    return {"vgg16_bn": VGG16_BN_Weights, "vgg16": VGG16_Weights}[backbone].IMAGENET1K_V1


def vgg_features(cfg: list[int | str], batch_norm: bool) -> nn.Sequential:
    """The VGG convolutional stack with torchvision's layer order, so its state-dict keys match."""
    layers: list[nn.Module] = []
    in_channels = 3
    for c in cfg:
        if c == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(c, int)
        layers.append(nn.Conv2d(in_channels, c, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU(inplace=True))
        in_channels = c
    return nn.Sequential(*layers)

Maps = dict[str, Tensor]


def scaled(channels: int, width: float) -> int:
    """Channels kept by the width multiplier (at least 1)."""
    return max(1, round(channels * width))


class AttentionGate(nn.Module):
    """Attention module of Fig. 2 on an intermediate feature F guided by the global feature G."""

    def __init__(self, in_channels: int, guide_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.W_f = nn.Conv2d(in_channels, inter_channels, kernel_size=1, bias=False)
        self.W_g = nn.Conv2d(guide_channels, inter_channels, kernel_size=1, bias=False)
        self.W = nn.Conv2d(inter_channels, 1, kernel_size=1, bias=True)
        for conv in (self.W_f, self.W_g, self.W):  # He initialisation (§3.1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.W.bias)

    def forward(self, f: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """f (N, C, H, W), g (N, Cg, h, w) → attention A (N, 1, H, W), attended F̂ (N, C, H, W)."""
        up_g = F.interpolate(self.W_g(g), size=f.shape[-2:], mode="bilinear", align_corners=False)
        r = self.W(F.relu(self.W_f(f) + up_g))  # Eq. 1
        a = torch.sigmoid(r)  # Eq. 2
        return a, a * f  # Eq. 3: f̂_i = a_i · f_i


class AttnMelNet(nn.Module):
    """VGG-16 backbone (dense layers removed except for ``arch='vgg16'``) with the chosen head."""

    def __init__(
        self, arch: str = "attnmel", backbone: str = "vgg16_bn", width: float = 1.0
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise AttnMelError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        if backbone not in BACKBONES:
            raise AttnMelError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if not 0 < width <= 1:
            raise AttnMelError(f"width must be in (0, 1], got {width}")
        self.arch, self.backbone, self.width = arch, backbone, width
        cfg = [c if c == "M" else scaled(c, width) for c in VGG16_CFG]
        self.features = vgg_features(cfg, batch_norm=backbone == "vgg16_bn")
        c3, c4, c5 = scaled(256, width), scaled(512, width), scaled(512, width)
        self.attn3: AttentionGate | None = None
        self.attn4: AttentionGate | None = None
        if arch == "attnmel":
            inter = scaled(ATTENTION_FEATURES, width)
            self.attn3 = AttentionGate(c3, c5, inter)
            self.attn4 = AttentionGate(c4, c5, inter)
        if arch == "vgg16":
            hidden = scaled(4096, width)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier: nn.Module = nn.Sequential(
                nn.Linear(c5 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, len(CLASSES)),
            )
        else:
            in_features = c5 if arch == "vgg16-gap" else c3 + c4 + c5
            self.classifier = nn.Linear(in_features, len(CLASSES))
        # torchvision's VGG initialisation (under PyTorch's defaults the signal fades through
        # 13 convolutions and every input gets the same logits).
        for m in (*self.features.modules(), *self.classifier.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def pools(self, x: Tensor) -> list[Tensor]:
        """Outputs of pool-1 … pool-5 for x (N, 3, S, S); pool-k has size S / 2**k."""
        out = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                out.append(x)
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Maps]:
        """x (N, 3, S, S) → logits (N, 2) and the variant's maps (see the module docstring)."""
        for side in x.shape[-2:]:  # five 2×2 poolings: maps align with the input only then
            check_image_size(int(side))
        _, _, p3, p4, g = self.pools(x)
        if self.arch == "vgg16":
            return self.classifier(torch.flatten(self.avgpool(g), 1)), {}
        gap_g = g.mean(dim=(2, 3))
        if self.arch == "vgg16-gap":
            logits = self.classifier(gap_g)
            # CAM (Zhou et al. 2016): the melanoma weights applied at every pool-5 location.
            cam = torch.einsum("c,nchw->nhw", self.classifier.weight[1], g).unsqueeze(1)
            return logits, {"cam": cam}
        if self.attn3 is not None and self.attn4 is not None:
            a3, p3 = self.attn3(p3, g)
            a4, p4 = self.attn4(p4, g)
            maps = {"pool3": a3, "pool4": a4}
        else:
            maps = {}
        feature = torch.cat([p3.mean(dim=(2, 3)), p4.mean(dim=(2, 3)), gap_g], dim=1)
        return self.classifier(feature), maps


def check_image_size(image_size: int) -> None:
    """Raise unless the input side is a positive multiple of 32 (five 2×2 poolings)."""
    if image_size < 32 or image_size % 32:
        raise AttnMelError(f"image size must be a multiple of 32 (≥ 32), got {image_size}")


def imagenet_weights_file(backbone: str) -> Path:
    """Where torchvision's weights API caches the ImageNet file for ``backbone``."""
    url = _imagenet_weights(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _imagenet_state_dict(backbone: str, weights_file: Path | None) -> dict[str, Tensor]:
    """ImageNet state dict via torchvision's weights API (hub cache) or a local file."""
    if weights_file is not None:
        if not weights_file.is_file():
            raise AttnMelError(f"{weights_file}: pretrained weights file not found")
        if weights_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(weights_file)
        try:  # weights_only: tensors only, no pickled code is executed
            return torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # any failure means an unusable file
            raise AttnMelError(f"{weights_file}: not a torchvision state dict ({exc})") from None
    cached = imagenet_weights_file(backbone)
    if not cached.is_file():
        raise AttnMelError(
            f"ImageNet weights for {backbone} are not in the torch hub cache (expected {cached}, "
            f"from {_imagenet_weights(backbone).url}); download that file there, pass its path "
            "with --pretrained-weights FILE, or train from scratch with --no-pretrained"
        )
    return _imagenet_weights(backbone).get_state_dict(progress=False, check_hash=True)


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
        state = _imagenet_state_dict(backbone, weights_file)
        keep = ("features.",) + (("classifier.0.", "classifier.3.") if arch == "vgg16" else ())
        state = {k: v for k, v in state.items() if k.startswith(keep)}
        missing = [k for k in model.state_dict() if k.startswith("features.") and k not in state]
        if missing:
            raise AttnMelError(
                f"pretrained weights do not fit the {backbone} backbone (missing {missing[0]}…)"
            )
        model.load_state_dict(state, strict=False)
    return model
