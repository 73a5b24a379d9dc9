"""The attention module of Fig. 2 (paper §2.1, Eq. 1–3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_FEATURES = 256  # W_f and W_g have 256 filters (Eq. 1)


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
