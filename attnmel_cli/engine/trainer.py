"""Training (paper §2.2, §3.1): setup, the epoch loop, best-by-validation-AUC and resume.

The recipe's defaults are the paper's, with the authors' code where the paper is silent: focal
loss (γ = 2), melanoma oversampled ×4, random S crop from the prepared image resized to
R = S·256/224 with random 90° rotations and flips, SGD (momentum 0.9, Nesterov, weight decay
1e-4), learning rate 0.01 divided by 10 every 10 epochs, 50 epochs, batch 32, and the Dice
regularisation of Eq. 5 when ``roi`` is set. Validation scores the prepared images exactly as
``predict`` does (:func:`attnmel_cli.engine.inference.score_paths`).

Under ``torchrun`` the same loop runs data-parallel (:mod:`attnmel_cli.engine.distributed`):
each rank trains on its share of every global batch, validation is split across the ranks and
gathered, and only rank 0 reads or writes the run dir.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from attnmel_cli.config import TrainConfig
from attnmel_cli.data.classes import class_labels, class_weights, resolve_classes
from attnmel_cli.data.id_set import encode_ids, union_ids
from attnmel_cli.data.manifest import MANIFEST_NAME, Row
from attnmel_cli.data.sampler import OversamplingSampler
from attnmel_cli.engine.averaging import average_last
from attnmel_cli.engine.distributed import SINGLE, Dist, process_group
from attnmel_cli.engine.epoch import CHANNELS_LAST_DEVICES, Step, train_epoch, validate
from attnmel_cli.engine.epoch_log import (
    Bar,
    EpochLog,
    EpochLogFactory,
    ProgressFactory,
    no_progress,
)
from attnmel_cli.engine.init_weights import inherited, init_from
from attnmel_cli.engine.loader import training_loader
from attnmel_cli.engine.normalize import normalization
from attnmel_cli.engine.optim import Optimisation, amp_dtype
from attnmel_cli.engine.setup import (
    TrainingData,
    check_config,
    check_resumable,
    determinism,
    load_data,
)
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.io.pretrained import build_model
from attnmel_cli.io.run_dir import STATE, claim_run_dir, last_weights, save_epoch
from attnmel_cli.io.run_state import RunState, capture_rng, load_run_state, restore_rng
from attnmel_cli.models.attnmel import AttnMelNet
from attnmel_cli.models.names import CLASSES
from attnmel_cli.models.registry import parse_strides
from attnmel_cli.parallel import train_workers

log = logging.getLogger("attnmel")


class TrainInterrupted(AttnMelError):
    """Ctrl-C during training; the last complete epoch is on disk."""

    exit_code = 130


@dataclass
class TrainResult:
    """Outcome of :func:`train`: where the run is, its best epoch and every epoch's metrics."""

    run_dir: Path
    best_epoch: int
    best_auc: float
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_s: float = math.nan  # training throughput of the last epoch run


def train(config: TrainConfig, *, progress: ProgressFactory = no_progress,
          epoch_log: EpochLogFactory | None = None) -> TrainResult:
    """Train one model on the prepared dirs ``config.data`` into the run dir ``config.out``.

    ``progress`` opens the bar each epoch advances (the command's; none by default);
    ``epoch_log`` opens the log ``config.tensorboard`` asks for
    (``viz.tensorboard.TensorBoardLog``). Raises :class:`TrainInterrupted` on Ctrl-C (the last
    complete epoch stays in RUN_DIR for ``--resume``) and :class:`AttnMelError` for bad
    options, data or an existing run.
    """
    check_config(config)
    if config.tensorboard is not None and epoch_log is None:
        raise AttnMelError("--tensorboard: train was given no epoch_log (TensorBoardLog)")
    with process_group(config.device) as (dist, device):

        def setup() -> tuple[TrainingData, RunState | None, tuple[str, ...]]:
            dist.local_batch(config.batch_size)  # the global batch must split evenly
            data = load_data(config)
            classes = resolve_classes(config.classes, data.train)
            labels = class_labels(data.train, classes, f"{config.target / MANIFEST_NAME}: ")
            class_weights(config.class_weights, labels, len(classes))  # checked before claiming
            claim_run_dir(config.out, resume=config.resume, force=config.force)
            state = load_run_state(config.out / STATE) if config.resume else None
            if state is not None:
                check_resumable(state, config, data.run_fingerprint)
            return data, state, classes

        # Rank 0 alone reads and claims the run dir; the other ranks get its data and state.
        data, state, classes = dist.on_main(setup)
        with determinism(config):
            shown = progress if dist.is_main else no_progress
            return _run(config, device, data, state, shown, dist, classes, epoch_log)


@dataclass
class _Standing:
    """Where a run stands: epochs done, the best epoch so far, every epoch's metrics."""

    start: int = 0
    best_auc: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_s: float = math.nan  # training throughput of the last epoch run


def _build(
    config: TrainConfig, data: TrainingData, state: RunState | None, device: torch.device,
    dist: Dist, classes: tuple[str, ...],
) -> tuple[AttnMelNet, CheckpointMeta]:
    """The model (ImageNet-initialised, or the interrupted run's weights) and its metadata."""
    fresh = state is None and dist.is_main and config.init is None
    model = build_model(  # under torchrun the other ranks get rank 0's weights from DDP
        config.arch, config.backbone, config.width, strides=parse_strides(config.strides),
        pretrained=config.pretrained and fresh,
        weights_file=config.pretrained_weights if fresh else None, classes=classes,
    )
    paths = [root / row.image for root, row in zip(data.roots, data.train, strict=True)]
    mean, std = dist.on_main(lambda: normalization(config, paths))
    init_sources, init_ids = dist.on_main(lambda: inherited(config.init))
    sources = [s.record() for s in data.sources] + init_sources
    meta = CheckpointMeta(
        arch=config.arch, backbone=config.backbone, width=config.width,
        image_size=config.image_size, classes=classes, mean=mean, std=std, strides=model.strides,
        train_config=config.as_record(), data_fingerprint=data.fingerprint,
        crop_fraction=data.sources[0].crop_fraction,
        sources=sources if len(sources) > 1 else [],  # one prepared dir: data_fingerprint says
        train_image_ids=union_ids(encode_ids(r.image_id for r in data.train), init_ids),
    )
    if state is not None and dist.is_main:
        model.load_state_dict(last_weights(config.out, state.epoch), strict=True)
    elif config.init is not None and dist.is_main:
        init_from(model, meta, config.init)
    model.to(device)
    if device.type in CHANNELS_LAST_DEVICES:
        model.to(memory_format=torch.channels_last)
    return model, meta


@dataclass
class _Loop:
    """Everything one epoch needs, built once by :func:`_run`."""

    config: TrainConfig
    model: AttnMelNet
    trained: torch.nn.Module  # DDP, or model itself
    meta: CheckpointMeta
    opt: Optimisation
    sampler: OversamplingSampler
    loader: DataLoader
    step: Step
    val_rows: list[Row]
    device: torch.device
    workers: int
    fingerprint: str
    dist: Dist
    run: _Standing
    board: EpochLog | None = None  # --tensorboard, on rank 0

    def epoch(self, epoch: int, bar: Bar) -> None:
        """Train, validate, record and (rank 0) save epoch ``epoch`` (0-based)."""
        config, run, t0, lr = self.config, self.run, time.perf_counter(), self.opt.lr
        self.sampler.set_epoch(epoch)
        task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(self.loader))
        sums, seen = train_epoch(self.trained, self.loader, self.step, self.device, self.dist,
                                 lambda: bar.advance(task))
        run.samples_per_s = seen / (time.perf_counter() - t0)
        if not self.opt.per_step:
            self.opt.scheduler.step()
        losses = (sums / max(seen, 1)).tolist()
        if not all(map(math.isfinite, losses)):
            raise AttnMelError(
                f"training diverged in epoch {epoch + 1} (loss {losses[0]}); lower --lr"
            )
        self.dist.broadcast_state(self.model, buffers_only=True)  # rank 0's BN statistics
        val = validate(self.model, self.meta, config, self.val_rows, self.device, self.workers,
                       self.dist)
        bar.remove_task(task)
        run.history.append({
            "epoch": epoch + 1, "train_loss": losses[0], "train_focal": losses[1],
            "train_dice3": losses[2], "train_dice4": losses[3], "lr": lr, **val,
            "seconds": time.perf_counter() - t0,
        })
        # best by validation AUC (§3.1); without a validation split, the last epoch
        is_best = val["val_auc"] > run.best_auc or not self.val_rows
        if is_best:
            run.best_auc, run.best_epoch = val["val_auc"], epoch + 1
        if self.dist.is_main:  # the only rank that writes the run dir
            self._save(epoch + 1, is_best)
        if self.board is not None:
            self.board.log_epoch(run.history[-1], self.model, self.meta, self.device)
        log.info(
            "epoch %d/%d  loss %.4f  val AP %.4f  AUC %.4f%s  %.0f samples/s  %.0f s",
            epoch + 1, config.epochs, losses[0], val["val_ap"], val["val_auc"],
            "  (best)" if is_best else "", run.samples_per_s, run.history[-1]["seconds"],
        )

    def _save(self, done: int, is_best: bool) -> None:
        """The run dir's files for ``done`` completed epochs (checkpoints, metrics, state)."""
        config, run, opt = self.config, self.run, self.opt
        save_epoch(config.out, self.model, self.meta, RunState(
            epoch=done, best_auc=run.best_auc, best_epoch=run.best_epoch,
            train_config=config.as_record(), data_fingerprint=self.fingerprint,
            optimizer=opt.optimizer.state_dict(),
            scheduler=opt.scheduler.state_dict(), scaler=opt.scaler.state_dict(),
            sampler={"seed": config.seed, "factor": config.oversample, "epoch": done},
            history=run.history, rng=capture_rng(),
        ), is_best=is_best, snapshot=done > config.epochs - config.average_last)


def _run(
    config: TrainConfig, device: torch.device, data: TrainingData, state: RunState | None,
    progress: ProgressFactory, dist: Dist = SINGLE, classes: tuple[str, ...] = CLASSES,
    epoch_log: EpochLogFactory | None = None,
) -> TrainResult:
    """Build everything (from ``state`` when resuming) and run the remaining epochs."""
    model, meta = _build(config, data, state, device, dist, classes)
    val_rows = data.val
    trained = dist.wrap(model, device, sync_bn=config.sync_bn)  # DDP, or model itself
    workers = train_workers(config.workers, dist.local_world)
    labels = class_labels(data.train, classes)
    sampler, loader = training_loader(config, data, labels.tolist(), device, workers, dist)
    weights = class_weights(config.class_weights, labels[sampler.pool], len(classes))
    opt = Optimisation.build(model, config, device, steps_per_epoch=len(loader))
    run = _Standing()
    if state is not None:
        opt.load(state)
        run = _Standing(state.epoch, state.best_auc, state.best_epoch, state.history)
        restore_rng(state.rng)  # after building the model, whose initialisation draws numbers
        log.info("resuming %s after epoch %d of %d", config.out, run.start, config.epochs)
    step = Step(trained, opt, config, device, meta.preprocess, amp_dtype(config, device),
                None if weights is None else torch.tensor(weights, device=device))
    board = (epoch_log(config.tensorboard, config.target, val_rows, config.as_record(),
                       resume_after=None if state is None else run.start)
             if config.tensorboard is not None and epoch_log and dist.is_main else None)
    loop = _Loop(config, model, trained, meta, opt, sampler, loader, step, val_rows, device,
                 workers, data.run_fingerprint, dist, run, board)
    epoch = run.start
    try:
        with progress() as bar:
            for epoch in range(run.start, config.epochs):
                loop.epoch(epoch, bar)
        if config.average_last:
            average_last(config, model, meta, step, loader, val_rows, device, workers, dist)
    except KeyboardInterrupt:
        # the state file, not last.safetensors: a kill between the two may have left last newer
        kept = (f"{config.out / STATE} holds epoch {len(run.history)}; continue with --resume"
                if run.history else "no epoch completed, nothing saved")
        raise TrainInterrupted(f"interrupted in epoch {epoch + 1}; {kept}") from None
    finally:
        if board is not None:
            board.close()
    return TrainResult(config.out, run.best_epoch, run.best_auc, run.history, run.samples_per_s)
