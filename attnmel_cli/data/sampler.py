"""Melanoma oversampling (authors' code: every melanoma listed 4 times) as a resumable sampler.

Each epoch's order is a pure function of (seed, epoch), like ``DistributedSampler``: resuming
at epoch e replays exactly the order an uninterrupted run would see, with no hidden state.
Each drawn item also carries its own augmentation seed, so the random crops and flips do not
depend on the number of DataLoader workers. A distributed variant only has to slice
:meth:`OversamplingSampler.epoch_order` per rank. With several sources and weights other than 1
(``train --source-weights``), each pass draws each source's weighted share of its own
oversampled pool, still a pure function of (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from attnmel_cli.config import OVERSAMPLE


class OversamplingSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)``: melanoma (label 1) ``factor`` times, shuffled."""

    def __init__(
        self, labels: Sequence[int], factor: int = OVERSAMPLE, seed: int = 0, passes: int = 1,
        sources: Sequence[int] | None = None, weights: Sequence[float] | None = None,
    ) -> None:
        self.pool = np.concatenate(
            [np.repeat(np.flatnonzero(np.asarray(labels) == 1), factor),
             np.flatnonzero(np.asarray(labels) != 1)]
        )
        self.factor, self.seed, self.epoch, self.passes = factor, seed, 0, passes
        # several sources (``train --data A --data B``): each one's share of the pool per pass
        self.pools: list[tuple[np.ndarray, float]] = []
        if sources is not None and weights is not None and any(w != 1 for w in weights):
            of = np.asarray(sources)[self.pool]
            self.pools = [(self.pool[of == s], float(w)) for s, w in enumerate(weights)]

    @property
    def pass_length(self) -> int:
        """Items drawn per pass: the oversampled pool, or each source's weighted share of it."""
        if not self.pools:
            return len(self.pool)
        return sum(round(w * len(p)) for p, w in self.pools)

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """One pass: each source's pool whole ⌊w⌋ times plus a seeded subset of the rest."""
        parts = []
        for pool, weight in self.pools:
            whole, rest = divmod(round(weight * len(pool)), len(pool)) if len(pool) else (0, 0)
            parts += [pool] * whole + [rng.choice(pool, rest, replace=False)]
        return rng.permutation(np.concatenate(parts))

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (0-based)."""
        self.epoch = epoch

    def epoch_order(self) -> list[tuple[int, int]]:
        """The whole epoch: (dataset index, augmentation seed) pairs; ``passes`` shuffled passes
        over the oversampled pool (the authors' "epoch" is 2 passes over ISIC 2017)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.concatenate([self._draw(rng) if self.pools else rng.permutation(self.pool)
                                for _ in range(self.passes)])
        seeds = rng.integers(0, 2**62, size=len(order))
        return list(zip(order.tolist(), seeds.tolist(), strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.epoch_order())

    def __len__(self) -> int:
        return self.pass_length * self.passes


class ShardedOversamplingSampler(OversamplingSampler):
    """Rank ``rank``'s share of the epoch order that ``world`` data-parallel ranks draw together.

    Every rank computes the same :meth:`epoch_order` (a function of seed and epoch) and takes
    every ``world``-th item from position ``rank``. With a per-rank batch of
    ``batch_size / world``, global step k then trains on exactly the items a single process
    with ``batch_size`` trains on at step k. As in the single process the ragged last batch is
    dropped; an epoch shorter than one batch is padded (wrapping around) to a multiple of
    ``world``, so that every rank takes the same number of steps.
    """

    def __init__(
        self, labels: Sequence[int], factor: int = OVERSAMPLE, seed: int = 0, passes: int = 1,
        sources: Sequence[int] | None = None, weights: Sequence[float] | None = None, *,
        rank: int, world: int, batch_size: int,
    ) -> None:
        super().__init__(labels, factor, seed, passes, sources, weights)
        if not 0 <= rank < world or batch_size % world:
            raise ValueError(f"rank {rank} of {world} with global batch {batch_size}")
        self.rank, self.world, self.batch_size = rank, world, batch_size

    def global_length(self) -> int:
        """Items drawn per epoch by all the ranks together."""
        n = self.pass_length * self.passes
        if n > self.batch_size:
            return n // self.batch_size * self.batch_size
        return -(-n // self.world) * self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, n = self.epoch_order(), self.global_length()
        order = (order * -(-n // len(order)))[:n] if order else order
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return self.global_length() // self.world
