"""Training (paper §2.2, §3.1): the loop, best-by-validation-AUC and resume.

The recipe's defaults are the paper's, with the authors' code where the paper is silent: focal
loss (γ = 2), melanoma oversampled ×4, random S crop from the prepared image resized to
R = S·256/224 with random 90° rotations and flips, SGD (momentum 0.9, Nesterov, weight decay
1e-4), learning rate 0.01 divided by 10 every 10 epochs, 50 epochs, batch 32, and the Dice
regularisation of Eq. 5 when ``roi`` is set. Validation scores the prepared images exactly as
``predict`` does (:func:`attnmel_cli.inference.score_paths`).

Under ``torchrun`` the same loop runs data-parallel (:mod:`attnmel_cli.distributed`): each rank
trains on its share of every global batch, validation is split across the ranks and gathered,
and only rank 0 reads or writes the run dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.data import DataLoader

from attnmel_cli.averaging import average_state_dicts, recalibrate_batch_norm
from attnmel_cli.checkpoint import CheckpointMeta, read_tensors, save_checkpoint
from attnmel_cli.distributed import SINGLE, Dist, make_sampler, process_group
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.inference import score_paths
from attnmel_cli.losses import FOCAL_GAMMA, LAMBDA1, LAMBDA2, attnmel_loss, focal_loss
from attnmel_cli.manifest import MANIFEST_NAME, Row, read_manifest
from attnmel_cli.metrics import average_precision, roc_auc
from attnmel_cli.model import ARCHS, AttnMelNet, build_model, check_image_size
from attnmel_cli.run_dir import (
    AVERAGED,
    STATE,
    claim_run_dir,
    epoch_name,
    last_weights,
    save_epoch,
)
from attnmel_cli.run_state import RunState, capture_rng, load_run_state, restore_rng
from attnmel_cli.sampler import OVERSAMPLE
from attnmel_cli.trainset import ROIS, TrainSet, physical_memory, roi_known, roi_path

log = logging.getLogger("attnmel")

CHANNELS_LAST_DEVICES = ("cuda", "cpu")  # NHWC convolutions: faster on CPU (oneDNN) too
# Options a resumed run may change; every other option must match the interrupted run's.
RESUME_MAY_CHANGE = frozenset(
    {"data", "out", "epochs", "average_last", "device", "workers", "amp", "cache_images",
     "resume", "force", "sync_bn"}
)
CACHE_RAM_FRACTION = 0.25  # decoded training images are kept in RAM up to this share of it


class TrainInterrupted(AttnMelError):
    """Ctrl-C during training; the last complete epoch is on disk."""

    exit_code = 130


@dataclass
class TrainConfig:
    """Every option of a run; recorded in each checkpoint's ``train_config``."""

    data: Path
    out: Path
    arch: str = "attnmel"
    backbone: str = "vgg16_bn"
    pretrained: bool = True  # ImageNet initialisation of the backbone (§3.1)
    pretrained_weights: Path | None = None
    roi: str = "none"
    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_step: int = 10  # epochs between learning-rate decays
    average_last: int = 0  # average the weights of the last K epochs into averaged.safetensors
    lr_decay: float = 0.1
    oversample: int = OVERSAMPLE
    gamma: float = FOCAL_GAMMA
    lambda1: float = LAMBDA1
    lambda2: float = LAMBDA2
    width: float = 1.0
    image_size: int = 224
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    workers: int | None = None  # None: default_train_workers()
    amp: bool = True  # mixed precision on CUDA
    cache_images: bool = True  # decode the training images once into RAM when they fit
    sync_bn: bool = False  # under torchrun: batch-norm statistics over the global batch (CUDA)
    resume: bool = False
    force: bool = False

    def as_record(self) -> dict[str, Any]:
        """JSON-able dict (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """Outcome of :func:`train`: where the run is, its best epoch and every epoch's metrics."""

    run_dir: Path
    best_epoch: int
    best_auc: float
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_s: float = math.nan  # training throughput of the last epoch run


def default_train_workers(processes: int = 1) -> int:
    """DataLoader workers: the cores besides the main process, at most 8 (``processes`` training
    processes on the machine share its cores)."""
    return max(1, min(8, (os.cpu_count() or 2) // processes - 1))


def data_fingerprint(rows: Sequence[Row]) -> str:
    """SHA-256 over (image_id, split, label, image sha256) of every manifest row, by id."""
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.image_id):
        h.update(f"{row.image_id},{row.split},{row.label},{row.sha256}\n".encode())
    return h.hexdigest()


def _check_config(config: TrainConfig) -> None:
    problems = []
    if config.arch not in ARCHS:
        problems.append(f"unknown arch {config.arch!r} (choose {', '.join(ARCHS)})")
    if config.roi not in ROIS:
        problems.append(f"unknown roi {config.roi!r} (choose {', '.join(ROIS)})")
    elif config.roi != "none" and config.arch != "attnmel":
        problems.append(f"--roi {config.roi} regularises attention maps: it needs --arch attnmel")
    for name in ("epochs", "batch_size", "oversample", "lr_step"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be ≥ 1")
    if not 0 <= config.average_last <= config.epochs:
        problems.append(f"average_last must be between 0 and epochs ({config.epochs})")
    if not config.lr > 0:
        problems.append("lr must be > 0")
    if config.resume and config.force:
        problems.append("--resume continues a run and --force replaces it: pass one")
    if problems:
        raise AttnMelError("; ".join(problems))
    check_image_size(config.image_size)


def _load_data(config: TrainConfig) -> tuple[list[Row], list[Row], str]:
    """Train and validation rows of the prepared dir, checked for this run, and its fingerprint."""
    rows = read_manifest(config.data)
    train_rows = [r for r in rows if r.split == "train"]
    val_rows = [r for r in rows if r.split == "val"]
    where = config.data / MANIFEST_NAME
    if not train_rows:
        raise DataError(f"{where}: no training images (split 'train')")
    if {r.label for r in val_rows} != {0, 1}:
        raise DataError(
            f"{where}: the validation split needs melanoma and non-melanoma images (has "
            f"{sum(r.label for r in val_rows)} of {len(val_rows)} melanoma); the best epoch is "
            "chosen by validation AUC"
        )
    if config.roi != "none":
        if not any(roi_path(r, config.roi) for r in train_rows):
            kind = "dermoscopic-feature" if config.roi == "dermo" else "lesion"
            raise DataError(
                f"{where}: --roi {config.roi} needs {kind} maps; no training image has one"
            )
        unknown = sum(not roi_known(r, config.roi) for r in train_rows)
        if unknown:
            log.warning(
                "%d of %d training images have no lesion mask: they are left out of the Dice "
                "terms of --roi %s", unknown, len(train_rows), config.roi,
            )
    return train_rows, val_rows, data_fingerprint(rows)


@contextlib.contextmanager
def _determinism(config: TrainConfig) -> Iterator[None]:
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


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bfloat16 on CUDA where supported, else float16 (with loss scaling); None off CUDA."""
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class _Optimisation:
    """SGD with Nesterov momentum, the step schedule and (float16 only) the loss scaler."""

    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.StepLR
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, model: AttnMelNet, config: TrainConfig, device: torch.device) -> _Optimisation:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum,
            nesterov=config.nesterov, weight_decay=config.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_decay)
        fp16 = _amp_dtype(config, device) == torch.float16
        return cls(optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=fp16))

    def load(self, state: RunState) -> None:
        """Continue from ``state`` (buffers move to the parameters' device)."""
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


@dataclass
class _Step:
    """One optimisation step on a batch from :class:`attnmel_cli.trainset.TrainSet`."""

    model: AttnMelNet | torch.nn.Module  # DistributedDataParallel under torchrun
    opt: _Optimisation
    config: TrainConfig
    device: torch.device
    mean: Tensor  # (1, 3, 1, 1) on the device
    std: Tensor
    amp_dtype: torch.dtype | None

    def __call__(self, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        """Images uint8 (N, 3, S, S), roi, known, labels → loss terms (4,) summed over images."""
        images, roi, known, labels = (t.to(self.device, non_blocking=True) for t in batch)
        x = (images.float() / 255.0 - self.mean) / self.std  # normalised on the device
        if self.device.type in CHANNELS_LAST_DEVICES:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits, maps = self.model(x)
        terms = attnmel_loss(  # Eq. 5
            logits, labels, maps, roi if self.config.roi != "none" else None, known,
            gamma=self.config.gamma, lambda1=self.config.lambda1, lambda2=self.config.lambda2,
        )
        self.opt.optimizer.zero_grad(set_to_none=True)
        self.opt.scaler.scale(terms.total).backward()
        self.opt.scaler.step(self.opt.optimizer)
        self.opt.scaler.update()
        parts = torch.stack([terms.total, terms.focal, terms.dice3, terms.dice4])
        return parts.detach() * len(labels)  # no host sync: read once per epoch


def _validate(
    model: AttnMelNet, meta: CheckpointMeta, config: TrainConfig, rows: Sequence[Row],
    device: torch.device, workers: int, dist: Dist = SINGLE,
) -> dict[str, float]:
    """Validation focal loss, AP and AUC (scikit-learn's, paper §3.1) as ``predict`` scores.

    Under torchrun each rank scores a contiguous block of the split (with rank 0's weights and
    batch-norm statistics) and every rank gets all the probabilities, in order.
    """
    lo, hi = dist.bounds(len(rows))
    paths = [config.data / r.image for r in rows[lo:hi]]
    local: list[tuple[float, str | None]] = [
        (math.nan if s.p_melanoma is None else s.p_melanoma, s.error)
        for s in score_paths(model, meta, paths, device=device, batch_size=2 * config.batch_size,
                             workers=workers, prepared=True)
    ]
    scored = dist.gather(local)
    failed = next((e for _, e in scored if e is not None), None)
    if failed is not None:
        raise DataError(failed)
    probs = np.array([p for p, _ in scored], dtype=float)
    labels = np.array([r.label for r in rows])
    p = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7)
    log_probs = torch.stack([(1 - p).log(), p.log()], dim=1)  # logits whose softmax is (1-p, p)
    return {
        "val_loss": float(focal_loss(log_probs, torch.from_numpy(labels), config.gamma)),
        "val_ap": average_precision(labels, probs),
        "val_auc": roc_auc(labels, probs),
    }


def _check_resumable(state: RunState, config: TrainConfig, fingerprint: str) -> None:
    saved, now = state.train_config, config.as_record()
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


def _cache(dataset: TrainSet, processes: int = 1) -> None:
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


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=console is None or not console.is_terminal,
    )


def train(config: TrainConfig, *, console: Console | None = None) -> TrainResult:
    """Train one model on the prepared dir ``config.data`` into the run dir ``config.out``.

    Progress bars go to ``console`` (none when ``None``). Raises :class:`TrainInterrupted` on
    Ctrl-C (the last complete epoch stays in RUN_DIR for ``--resume``) and
    :class:`AttnMelError` for bad options, data or an existing run.
    """
    _check_config(config)
    with process_group(config.device) as (dist, device):

        def setup() -> tuple[list[Row], list[Row], str, RunState | None]:
            dist.local_batch(config.batch_size)  # the global batch must split evenly
            train_rows, val_rows, fingerprint = _load_data(config)
            claim_run_dir(config.out, resume=config.resume, force=config.force)
            state = load_run_state(config.out / STATE) if config.resume else None
            if state is not None:
                _check_resumable(state, config, fingerprint)
            return train_rows, val_rows, fingerprint, state

        # Rank 0 alone reads and claims the run dir; the other ranks get its data and state.
        train_rows, val_rows, fingerprint, state = dist.on_main(setup)
        with _determinism(config):
            return _run(config, device, train_rows, val_rows, fingerprint, state,
                        console if dist.is_main else None, dist)


def _run(
    config: TrainConfig, device: torch.device, train_rows: list[Row], val_rows: list[Row],
    fingerprint: str, state: RunState | None, console: Console | None, dist: Dist = SINGLE,
) -> TrainResult:
    """Build everything (from ``state`` when resuming) and run the remaining epochs."""
    model = build_model(  # under torchrun the other ranks get rank 0's weights from DDP
        config.arch, config.backbone, config.width,
        pretrained=config.pretrained and state is None and dist.is_main,
        weights_file=config.pretrained_weights if state is None and dist.is_main else None,
    )
    meta = CheckpointMeta(
        arch=config.arch, backbone=config.backbone, width=config.width,
        image_size=config.image_size, train_config=config.as_record(),
        data_fingerprint=fingerprint,
    )
    if state is not None and dist.is_main:
        model.load_state_dict(last_weights(config.out, state.epoch), strict=True)
    model.to(device)
    if device.type in CHANNELS_LAST_DEVICES:
        model.to(memory_format=torch.channels_last)
    trained = dist.wrap(model, device, sync_bn=config.sync_bn)  # DDP, or model itself
    opt = _Optimisation.build(model, config, device)
    history: list[dict[str, float]] = []
    start, best_auc, best_epoch = 0, -math.inf, 0
    if state is not None:
        opt.load(state)
        start, best_auc, best_epoch = state.epoch, state.best_auc, state.best_epoch
        history = state.history
        restore_rng(state.rng)  # after building the model, whose initialisation draws numbers
        log.info("resuming %s after epoch %d of %d", config.out, start, config.epochs)

    workers = (default_train_workers(dist.local_world) if config.workers is None
               else config.workers)
    sampler = make_sampler(dist, [r.label for r in train_rows], config.oversample, config.seed,
                           config.batch_size)
    dataset = TrainSet(config.data, train_rows, config.image_size, config.roi)
    if config.cache_images:
        _cache(dataset, dist.local_world)
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
    step = _Step(
        trained, opt, config, device,
        torch.tensor(meta.mean, device=device).view(1, 3, 1, 1),
        torch.tensor(meta.std, device=device).view(1, 3, 1, 1),
        _amp_dtype(config, device),
    )
    samples_per_s, epoch = math.nan, start
    try:
        with _progress(console) as bar:
            for epoch in range(start, config.epochs):
                t0, lr = time.perf_counter(), opt.lr
                sampler.set_epoch(epoch)
                trained.train()
                task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(loader))
                sums, seen = torch.zeros(4, device=device), 0
                for batch in loader:
                    sums += step(batch)
                    seen += len(batch[3])
                    bar.advance(task)
                sums, total = dist.sum(sums, seen)  # over all ranks
                seen = int(total)
                samples_per_s = seen / (time.perf_counter() - t0)
                opt.scheduler.step()
                losses = (sums / max(seen, 1)).tolist()
                if not all(map(math.isfinite, losses)):
                    raise AttnMelError(
                        f"training diverged in epoch {epoch + 1} (loss {losses[0]}); lower --lr"
                    )
                dist.broadcast_state(model, buffers_only=True)  # rank 0's BN statistics
                val = _validate(model, meta, config, val_rows, device, workers, dist)
                bar.remove_task(task)
                history.append({
                    "epoch": epoch + 1, "train_loss": losses[0], "train_focal": losses[1],
                    "train_dice3": losses[2], "train_dice4": losses[3], "lr": lr, **val,
                    "seconds": time.perf_counter() - t0,
                })
                is_best = val["val_auc"] > best_auc  # best by validation AUC (§3.1)
                if is_best:
                    best_auc, best_epoch = val["val_auc"], epoch + 1
                if dist.is_main:  # the only rank that writes the run dir
                    save_epoch(config.out, model, meta, RunState(
                        epoch=epoch + 1, best_auc=best_auc, best_epoch=best_epoch,
                        train_config=config.as_record(), data_fingerprint=fingerprint,
                        optimizer=opt.optimizer.state_dict(),
                        scheduler=opt.scheduler.state_dict(), scaler=opt.scaler.state_dict(),
                        sampler={"seed": config.seed, "factor": config.oversample,
                                 "epoch": epoch + 1},
                        history=history, rng=capture_rng(),
                    ), is_best=is_best,
                       snapshot=epoch + 1 > config.epochs - config.average_last)
                log.info(
                    "epoch %d/%d  loss %.4f  val AP %.4f  AUC %.4f%s  %.0f samples/s  %.0f s",
                    epoch + 1, config.epochs, losses[0], val["val_ap"], val["val_auc"],
                    "  (best)" if is_best else "", samples_per_s, history[-1]["seconds"],
                )
        if config.average_last:
            _average_last(config, model, meta, step, loader, val_rows, device, workers, dist)
    except KeyboardInterrupt:
        # the state file, not last.safetensors: a kill between the two may have left last newer
        kept = (f"{config.out / STATE} holds epoch {len(history)}; continue with --resume"
                if history else "no epoch completed, nothing saved")
        raise TrainInterrupted(f"interrupted in epoch {epoch + 1}; {kept}") from None
    return TrainResult(config.out, best_epoch, best_auc, history, samples_per_s)


def _average_last(
    config: TrainConfig, model: AttnMelNet, meta: CheckpointMeta, step: _Step, loader: DataLoader,
    val_rows: Sequence[Row], device: torch.device, workers: int, dist: Dist = SINGLE,
) -> None:
    """Average the last ``config.average_last`` epochs' weights, recompute BN statistics on the
    training data, validate, and save ``averaged.safetensors``.

    Under torchrun rank 0 reads the epochs' weights and sends the average to the others; each
    rank re-estimates the statistics on its share of the data and the ranks average them.
    """
    first = config.epochs - config.average_last + 1
    epochs = list(range(first, config.epochs + 1))
    if dist.is_main:
        missing = [e for e in epochs if not (config.out / epoch_name(e)).is_file()]
        if missing:
            raise AttnMelError(
                f"{config.out}: --average-last {config.average_last} needs the weights of epochs "
                f"{', '.join(map(str, missing))}, which this run did not keep (was --average-last "
                "raised on --resume?)"
            )
        states = [read_tensors(config.out / epoch_name(e))[0] for e in epochs]
        model.load_state_dict(average_state_dicts(states), strict=True)
    model.to(device)
    dist.broadcast_state(model)

    def forward(batch: Sequence[Tensor]) -> object:
        x = (batch[0].to(device).float() / 255.0 - step.mean) / step.std
        if device.type in CHANNELS_LAST_DEVICES:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x)

    recalibrate_batch_norm(model, loader, forward)
    dist.average_buffers(model)
    val = _validate(model, meta, config, val_rows, device, workers, dist)
    meta.metrics = {"averaged_epochs": epochs, **val}
    if dist.is_main:
        save_checkpoint(config.out / AVERAGED, model, meta)
    log.info("averaged epochs %d–%d: val AP %.4f  AUC %.4f  → %s", first, config.epochs,
             val["val_ap"], val["val_auc"], config.out / AVERAGED)
