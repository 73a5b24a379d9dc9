"""Checks and preparations before a run's first step: options, prepared data, a resumable run
dir, seeding and determinism, and decoding the training images into RAM when they fit."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from attnmel_cli.config import TrainConfig
from attnmel_cli.data.augment import AUGMENTS
from attnmel_cli.data.folds import fold_split
from attnmel_cli.data.manifest import MANIFEST_NAME, SPLITS, Row, data_fingerprint, read_manifest
from attnmel_cli.data.mix import (
    EXTRA_SPLITS,
    TrainSource,
    parse_source_weights,
    run_fingerprint,
    source_names,
)
from attnmel_cli.data.prepare import prepared_crop_fraction
from attnmel_cli.data.train_set import ROIS, TrainSet, physical_memory, roi_known, roi_path
from attnmel_cli.engine.epoch_log import require_tensorboard
from attnmel_cli.engine.normalize import parse_normalize
from attnmel_cli.engine.optim import OPTIMIZERS, SCHEDULES
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.io.run_state import RunState
from attnmel_cli.models.attnmel import ARCHS, check_image_size
from attnmel_cli.models.backbones.base import check_backbone_name
from attnmel_cli.models.registry import parse_strides

log = logging.getLogger("attnmel")

# Options a resumed run may change; every other option must match the interrupted run's.
RESUME_MAY_CHANGE = frozenset(
    {"data", "out", "epochs", "average_last", "device", "workers", "amp", "cache_images",
     "resume", "force", "sync_bn", "tensorboard"}
)
CACHE_RAM_FRACTION = 0.25  # decoded training images are kept in RAM up to this share of it


def check_config(config: TrainConfig) -> None:
    """Raise one AttnMelError listing every invalid option of ``config``."""
    problems = []
    if config.arch not in ARCHS:
        problems.append(f"unknown arch {config.arch!r} (choose {', '.join(ARCHS)})")
    if config.roi not in ROIS:
        problems.append(f"unknown roi {config.roi!r} (choose {', '.join(ROIS)})")
    if config.augment not in AUGMENTS:
        problems.append(f"unknown augment {config.augment!r} (choose {', '.join(AUGMENTS)})")
    elif config.roi != "none" and config.arch != "attnmel":
        problems.append(f"--roi {config.roi} regularises attention maps: it needs --arch attnmel")
    for name in ("epochs", "batch_size", "oversample", "lr_step", "passes_per_epoch"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be ≥ 1")
    if config.optimizer not in OPTIMIZERS:
        problems.append(f"unknown optimizer {config.optimizer!r} (choose {', '.join(OPTIMIZERS)})")
    if config.schedule not in SCHEDULES:
        problems.append(f"unknown schedule {config.schedule!r} (choose {', '.join(SCHEDULES)})")
    if config.folds and not 0 <= config.fold < config.folds:
        problems.append(f"--fold must be between 0 and {config.folds - 1}")
    if config.folds == 1:
        problems.append("--folds must be at least 2 (0: no cross-validation)")
    if config.resume and config.init is not None:
        problems.append("--resume continues a run and --init starts one: pass one")
    if not 0 <= config.average_last <= config.epochs:
        problems.append(f"average_last must be between 0 and epochs ({config.epochs})")
    if not config.lr > 0:
        problems.append("lr must be > 0")
    if config.resume and config.force:
        problems.append("--resume continues a run and --force replaces it: pass one")
    if problems:
        raise AttnMelError("; ".join(problems))
    check_image_size(config.image_size)
    check_backbone_name(config.backbone)
    if config.tensorboard is not None:
        require_tensorboard()
    parse_strides(config.strides)
    parse_normalize(config.normalize)


def split_rows(config: TrainConfig, rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """(training rows, validation rows): fold ``fold`` of ``folds`` held out of train + val,
    or the splits named by ``train_splits`` against the val split (none when val is trained on).
    """
    if config.folds:
        return fold_split(rows, config.folds, config.fold, config.seed)
    splits = set(config.train_splits.split(","))
    unknown = splits - set(SPLITS)
    if unknown:
        raise DataError(f"--train-splits: unknown split {sorted(unknown)[0]!r} (choose from "
                        f"{', '.join(SPLITS)})")
    return ([r for r in rows if r.split in splits],
            [r for r in rows if r.split == "val" and "val" not in splits])


@dataclass
class TrainingData:
    """A run's rows: training rows of every source with each one's prepared dir and source index,
    the target's validation rows, and the sources as the checkpoint lists them."""

    train: list[Row]
    roots: list[Path]
    source: list[int]
    val: list[Row]
    fingerprint: str  # the target's data fingerprint (the checkpoint's data_fingerprint)
    sources: list[TrainSource]

    @property
    def run_fingerprint(self) -> str:
        """What --resume checks (:func:`attnmel_cli.data.mix.run_fingerprint`)."""
        return run_fingerprint(self.sources)

    @property
    def weights(self) -> list[float]:
        return [s.weight for s in self.sources]


def _check_target(config: TrainConfig, train_rows: list[Row], val_rows: list[Row]) -> None:
    where = config.target / MANIFEST_NAME
    if not train_rows:
        raise DataError(f"{where}: no training images (split {config.train_splits!r})")
    if val_rows and {r.label for r in val_rows} != {0, 1}:
        raise DataError(
            f"{where}: the validation split needs melanoma and non-melanoma images (has "
            f"{sum(r.label for r in val_rows)} of {len(val_rows)} melanoma); the best epoch is "
            "chosen by validation AUC"
        )


def _check_roi(config: TrainConfig, train_rows: list[Row]) -> None:
    if config.roi == "none":
        return
    if not any(roi_path(r, config.roi) for r in train_rows):
        kind = "dermoscopic-feature" if config.roi == "dermo" else "lesion"
        raise DataError(f"{config.target / MANIFEST_NAME}: --roi {config.roi} needs {kind} "
                        "maps; no training image has one")
    unknown = sum(not roi_known(r, config.roi) for r in train_rows)
    if unknown:
        log.warning(
            "%d of %d training images have no lesion mask: they are left out of the Dice "
            "terms of --roi %s", unknown, len(train_rows), config.roi,
        )


def _check_disjoint(folder: Path, rows: list[Row], target: Path, val_rows: list[Row]) -> None:
    """An extra source must not hold the target's validation images (same id or same file)."""
    held_out = {r.image_id for r in val_rows} | {r.sha256 for r in val_rows}
    leaked = [r.image_id for r in rows if r.image_id in held_out or r.sha256 in held_out]
    if leaked:
        raise DataError(
            f"{folder / MANIFEST_NAME}: {len(leaked)} of its images are also validation images "
            f"of {target} (same id or file: {', '.join(leaked[:5])}); they would "
            "leak into the figures the run is judged by"
        )


def load_data(config: TrainConfig) -> TrainingData:
    """The run's rows from every --data dir (:mod:`attnmel_cli.data.mix`), checked."""
    names = source_names(config.data)
    weights = parse_source_weights(config.source_weights, names)
    rows = read_manifest(config.target)
    train_rows, val_rows = split_rows(config, rows)
    _check_target(config, train_rows, val_rows)
    crop = prepared_crop_fraction(config.target)
    fingerprint = data_fingerprint(rows, crop)
    data = TrainingData(list(train_rows), [config.target] * len(train_rows),
                        [0] * len(train_rows), val_rows, fingerprint, [TrainSource(
                            names[0], fingerprint, weights[0], len(train_rows),
                            sum(r.label for r in train_rows), crop, "target")])
    for index, folder in enumerate(config.data[1:], 1):
        rows = read_manifest(folder)
        extra = [r for r in rows if r.split in EXTRA_SPLITS]
        if not extra:
            raise DataError(f"{folder / MANIFEST_NAME}: no train or val images to add")
        _check_disjoint(folder, extra, config.target, val_rows)
        crop = prepared_crop_fraction(folder)
        data.train += extra
        data.roots += [folder] * len(extra)
        data.source += [index] * len(extra)
        data.sources.append(TrainSource(names[index], data_fingerprint(rows, crop),
                                        weights[index], len(extra),
                                        sum(r.label for r in extra), crop, "extra"))
    _check_roi(config, data.train)
    return data


@contextlib.contextmanager
def determinism(config: TrainConfig) -> Iterator[None]:
    """Seed the global RNG; with ``deterministic`` use deterministic kernels (restored after).

    ``warn_only``: a few CUDA backward kernels (bilinear upsampling) have no deterministic
    version and warn instead of failing; on the CPU runs are bitwise repeatable.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.manual_seed(config.seed)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = config.deterministic
    torch.backends.cudnn.benchmark = not config.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def check_resumable(state: RunState, config: TrainConfig, fingerprint: str) -> None:
    # an option newer than the interrupted run was run with its default
    saved = {**TrainConfig(data=config.target, out=config.out).as_record(), **state.train_config}
    now = config.as_record()
    changed = [k for k in now if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k]]
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} → {now[k]!r}" for k in changed)
        raise AttnMelError(
            f"{config.out}: --resume needs the interrupted run's options; these differ ({detail})"
        )
    if state.data_fingerprint != fingerprint:
        raise AttnMelError(
            f"{config.out}: the prepared data differ from the interrupted run's (manifest "
            "fingerprint mismatch); resume with the same --data"
        )


def cache_images(dataset: TrainSet, processes: int = 1) -> None:
    """Decode the training set into RAM if it takes at most CACHE_RAM_FRACTION of it (shared by
    the ``processes`` training processes of this machine, each holding its own copy)."""
    ram, mib = physical_memory(), dataset.cache_bytes / 2**20
    if ram is None or dataset.cache_bytes > CACHE_RAM_FRACTION * ram / processes:
        log.info("decoding training images on the fly (%.0f MiB decoded would not fit in "
                 "%.0f %% of RAM)", mib, 100 * CACHE_RAM_FRACTION)
        return
    t0 = time.perf_counter()
    dataset.cache(threads=max(1, (os.cpu_count() or 1) // processes))
    log.info("decoded %d training images into RAM (%.0f MiB) in %.1f s",
             len(dataset), mib, time.perf_counter() - t0)
