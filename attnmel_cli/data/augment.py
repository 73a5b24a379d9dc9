"""Training-time augmentation (§3.1, authors' code): random crop, 90° rotations, flips.

Every transform acts on all channels of one (C, H, W) tensor, so an image and its ROI mask
stacked together stay aligned. Randomness comes from an explicit generator: a sample's view is
a pure function of its seed, whichever worker process draws it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_view(planes: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """planes (C, R, R) → (C, size, size): random ``size`` crop, k·90° rotation, h and v flips."""
    r = planes.shape[-1]
    top, left, k, hflip, vflip = (
        torch.randint(0, r - size + 1, (2,), generator=generator).tolist()
        + torch.randint(0, 4, (1,), generator=generator).tolist()
        + torch.randint(0, 2, (2,), generator=generator).tolist()
    )
    view = planes[:, top : top + size, left : left + size]
    if k:
        view = torch.rot90(view, k, dims=(1, 2))
    if hflip:
        view = view.flip(2)
    if vflip:
        view = view.flip(1)
    return view.contiguous()
