"""Melanoma oversampling (authors' code: every melanoma listed 4 times) as a resumable sampler.

Each epoch's order is a pure function of (seed, epoch), like ``DistributedSampler``: resuming
at epoch e replays exactly the order an uninterrupted run would see, with no hidden state.
Each drawn item also carries its own augmentation seed, so the random crops and flips do not
depend on the number of DataLoader workers. A distributed variant only has to slice
:meth:`OversamplingSampler.epoch_order` per rank.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

OVERSAMPLE = 4  # melanoma repeats per epoch (authors' train_oversample.csv)


class OversamplingSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)``: melanoma (label 1) ``factor`` times, shuffled."""

    def __init__(self, labels: Sequence[int], factor: int = OVERSAMPLE, seed: int = 0) -> None:
        self.pool = np.concatenate(
            [np.repeat(np.flatnonzero(np.asarray(labels) == 1), factor),
             np.flatnonzero(np.asarray(labels) != 1)]
        )
        self.factor, self.seed, self.epoch = factor, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (0-based)."""
        self.epoch = epoch

    def epoch_order(self) -> list[tuple[int, int]]:
        """The whole epoch: (dataset index, augmentation seed) pairs."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.pool)
        seeds = rng.integers(0, 2**62, size=len(order))
        return list(zip(order.tolist(), seeds.tolist(), strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.epoch_order())

    def __len__(self) -> int:
        return len(self.pool)
