"""Test-time augmentation over the 8 symmetries of the square (4 rotations × optional flip).

Dermoscopy photographs have no canonical orientation, and training already draws random 90°
rotations and flips (:mod:`attnmel_cli.data.augment`), so the network should score every
symmetric view alike; averaging the 8 views removes what is left of its orientation bias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from attnmel_cli.engine.scored import VIEWS


def apply_view(x: Tensor, k: int, flip: bool) -> Tensor:
    """x (..., H, W) → the view: flipped left–right (if ``flip``), then rotated k·90°."""
    y = x.flip(-1) if flip else x
    return torch.rot90(y, k, dims=(-2, -1)) if k else y


def undo_view(y: Tensor, k: int, flip: bool) -> Tensor:
    """The inverse of :func:`apply_view`: a map computed on the view, back in input orientation."""
    x = torch.rot90(y, -k, dims=(-2, -1)) if k else y
    return x.flip(-1) if flip else x


def views(x: Tensor) -> Iterator[tuple[int, bool, Tensor]]:
    """The 8 views of the batch x (N, C, H, W), H == W, with the transform that made each."""
    for k, flip in VIEWS:
        yield k, flip, apply_view(x, k, flip)


def tta_forward(
    model: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]], x: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Average softmax probabilities (N, K) and maps (N, 1, h, w), each map re-oriented to the
    input before averaging, over the 8 views of x (N, 3, S, S)."""
    prob_sum: Tensor | None = None
    map_sums: dict[str, Tensor] = {}
    for k, flip, view in views(x):
        logits, maps = model(view)
        probs = torch.softmax(logits.float(), dim=1)
        prob_sum = probs if prob_sum is None else prob_sum + probs
        for name, m in maps.items():
            m = undo_view(m.float(), k, flip)
            map_sums[name] = map_sums[name] + m if name in map_sums else m
    assert prob_sum is not None
    n = len(VIEWS)
    return prob_sum / n, {name: s / n for name, s in map_sums.items()}
