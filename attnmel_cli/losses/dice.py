"""Batch Dice loss between attention maps and reference ROI maps (Eq. 4).

The reference map Ā is a binary image-sized map (lesion, dermoscopic features or background).
It is downsampled to the attention map's size by area averaging (adaptive average pooling), as
the authors' code does: each cell of Ā(3) / Ā(4) holds the fraction of its 8×8 / 16×16 pixel
block inside the ROI. Area averaging keeps thin or sparse ROIs (streaks, small dermoscopic
superpixels) that nearest-neighbour sampling would drop or alias, and keeps Σā proportional to
the ROI's area. Ā's values are then in [0, 1], like those of A.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-7  # keeps Eq. 4 finite should a whole batch have no attention and no ROI at all


def downsample_reference(reference: Tensor, size: tuple[int, int]) -> Tensor:
    """Reference maps (N, 1, H, W) in [0, 1] → (N, 1, h, w) by area averaging."""
    return F.adaptive_avg_pool2d(reference.float(), size)


def batch_dice_loss(attention: Tensor, reference: Tensor) -> Tensor:
    """L_D = 1 − 2·Σ(a·ā) / Σ(a + ā) over the whole batch as one tensor (Eq. 4).

    attention (N, 1, h, w) in [0, 1]; reference (N, 1, H, W) in [0, 1], downsampled to (h, w)
    when larger. The sums run over every pixel of every image at once, never per image, so an
    image whose reference is all zero (no ROI) is valid: it only adds its attention mass to the
    denominator (paper §2.2). Scalar result, in float32.
    """
    a = attention.float()
    ref = reference.float()
    if ref.shape[-2:] != a.shape[-2:]:
        ref = downsample_reference(ref, tuple(a.shape[-2:]))
    return 1 - 2 * (a * ref).sum() / (a + ref).sum().clamp_min(_EPS)  # Eq. 4
