"""The paper's network (§2.1, Fig. 1–2) and its ablation baselines (§3.2), on any backbone.

Variants (``arch``), with the backbone's three maps F_a, F_b (strides 8 and 16 by default: VGG's
pool-3 and pool-4) and G (stride 32: pool-5):
- ``attnmel``   : attention gates on F_a and F_b guided by G (Eq. 1–3); GAP of F̂_a, F̂_b and G
                  concatenated → linear → K classes (AttnMel-CNN).
- ``mel-cnn``   : the same concatenation of GAP(F_a), GAP(F_b), GAP(G), no gates.
- ``vgg16-gap`` : GAP of G → linear, with its class activation map (Zhou et al. 2016); on a
                  non-VGG backbone it is the plain pooled baseline.
- ``vgg16``     : the original VGG-16 with its dense layers, K outputs (VGG backbones only).

K is ``len(classes)``: 2 (other, melanoma: the paper) or a multi-class list (the paper's future
work, e.g. ISIC 2017 Part 3's melanoma, seborrheic keratosis, nevus).

``forward(x)`` takes x of shape (N, 3, S, S), S divisible by 32, and returns ``(logits, maps)``:
logits (N, K); maps holds ``pool3`` (N, 1, S/8, S/8) and ``pool4`` (N, 1, S/16, S/16) attention
in [0, 1] for ``attnmel`` (the names of the paper's layers, whatever the backbone), ``cam``
(N, 1, S/32, S/32) for ``vgg16-gap``, and nothing for the others.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.attention import ATTENTION_FEATURES, AttentionGate
from attnmel_cli.models.backbones.base import DEFAULT_STRIDES, VGG_BACKBONES, make_backbone
from attnmel_cli.models.backbones.vgg import scaled
from attnmel_cli.models.names import ARCHS, CLASSES, class_problems, melanoma_index

__all__ = ["ARCHS", "CLASSES", "AttnMelNet", "check_image_size"]
Maps = dict[str, Tensor]


class AttnMelNet(nn.Module):
    """A backbone (``features``) with the chosen head (``attn3``, ``attn4``, ``classifier``)."""

    def __init__(
        self,
        arch: str = "attnmel",
        backbone: str = "vgg16_bn",
        width: float = 1.0,
        strides: tuple[int, int, int] = DEFAULT_STRIDES,
        classes: tuple[str, ...] = CLASSES,
    ) -> None:
        super().__init__()
        if class_problems(classes):
            raise AttnMelError("; ".join(class_problems(classes)))
        if arch not in ARCHS:
            raise AttnMelError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        if not 0 < width <= 1:
            raise AttnMelError(f"width must be in (0, 1], got {width}")
        if arch == "vgg16" and backbone not in VGG_BACKBONES:
            raise AttnMelError(f"arch vgg16 keeps VGG's dense layers: it needs a VGG backbone, "
                               f"not {backbone}")
        self.arch, self.backbone, self.width = arch, backbone, width
        self.classes, self.melanoma = tuple(classes), melanoma_index(classes)
        self.features = make_backbone(backbone, width, strides)
        self.strides = tuple(self.features.strides)
        c3, c4, c5 = self.features.channels
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
                nn.Linear(hidden, len(classes)),
            )
        else:
            in_features = c5 if arch == "vgg16-gap" else c3 + c4 + c5
            self.classifier = nn.Linear(in_features, len(classes))
        self._init_head()

    def _init_head(self) -> None:
        """Initialise the new layers only; the backbone keeps its own (or loaded) weights.

        VGG: torchvision's N(0, 0.01) for linear layers. Other backbones arrive ImageNet-trained,
        so their new head starts at zero: the first logits are 0 (loss log 2), not ±10 as
        timm's default head initialisation would give.
        """
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):
                if self.backbone in VGG_BACKBONES:
                    nn.init.normal_(m.weight, 0, 0.01)
                else:
                    nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Maps]:
        """x (N, 3, S, S) → logits (N, K) and the variant's maps (see the module docstring)."""
        for side in x.shape[-2:]:  # five 2×2 poolings: maps align with the input only then
            check_image_size(int(side))
        f3, f4, g = self.features(x)
        if self.arch == "vgg16":
            return self.classifier(torch.flatten(self.avgpool(g), 1)), {}
        gap_g = g.mean(dim=(2, 3))
        if self.arch == "vgg16-gap":
            logits = self.classifier(gap_g)
            # CAM (Zhou et al. 2016): the melanoma weights applied at every G location.
            w = self.classifier.weight[self.melanoma]
            cam = torch.einsum("c,nchw->nhw", w, g).unsqueeze(1)
            return logits, {"cam": cam}
        maps: Maps = {}
        if self.attn3 is not None and self.attn4 is not None:
            maps["pool3"], f3 = self.attn3(f3, g)  # Eq. 1–3 on the pool-3 analogue
            maps["pool4"], f4 = self.attn4(f4, g)  # … and on the pool-4 analogue
        feature = torch.cat([f3.mean(dim=(2, 3)), f4.mean(dim=(2, 3)), gap_g], dim=1)
        return self.classifier(feature), maps


def check_image_size(image_size: int) -> None:
    """Raise unless the input side is a positive multiple of 32 (five 2×2 poolings)."""
    if image_size < 32 or image_size % 32:
        raise AttnMelError(f"image size must be a multiple of 32 (≥ 32), got {image_size}")
