"""The training DataLoader: the oversampling sampler (this rank's share of it under torchrun) over
the training set, its images cached in memory when asked."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from attnmel_cli.config import TrainConfig
from attnmel_cli.data.sampler import OversamplingSampler
from attnmel_cli.data.train_set import TrainSet
from attnmel_cli.engine.distributed import Dist, make_sampler
from attnmel_cli.engine.setup import TrainingData, cache_images


def training_loader(
    config: TrainConfig, data: TrainingData, labels: list[int], device: torch.device,
    workers: int, dist: Dist,
) -> tuple[OversamplingSampler, DataLoader]:
    """The oversampling sampler (this rank's share of it: melanoma drawn ``oversample`` times,
    whatever the classes; each source's weighted share) and the training DataLoader over
    class indices ``labels``."""
    sampler = make_sampler(dist, [r.label for r in data.train], config.oversample, config.seed,
                           config.batch_size, config.passes_per_epoch, data.source, data.weights)
    dataset = TrainSet(data.roots, data.train, config.image_size, config.roi, labels,
                       config.augment)
    if config.cache_images:
        cache_images(dataset, dist.local_world)
    loader = DataLoader(
        dataset,
        batch_size=dist.local_batch(config.batch_size),
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=len(sampler) > dist.local_batch(config.batch_size),  # authors' code drops
        # the ragged batch (the sharded sampler has dropped it already)
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(config.seed),  # leaves the global RNG alone
    )
    return sampler, loader
