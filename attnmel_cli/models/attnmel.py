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

import torch
from torch import Tensor, nn

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.attention import ATTENTION_FEATURES, AttentionGate
from attnmel_cli.models.backbones.vgg import VGG16_CFG, scaled, vgg_features

ARCHS = ("attnmel", "mel-cnn", "vgg16-gap", "vgg16")
BACKBONES = ("vgg16_bn", "vgg16")
CLASSES = ("other", "melanoma")  # index 1 is the melanoma probability
Maps = dict[str, Tensor]


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
