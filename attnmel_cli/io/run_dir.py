"""RUN_DIR's layout and its update at the end of each epoch.

``last.safetensors`` and ``best.safetensors`` are ordinary attnmel checkpoints (best by
validation AUC, paper §3.1), ``averaged.safetensors`` and the ``epoch-NNN.safetensors`` it
averages (``--average-last``); ``last.state.safetensors`` holds what ``--resume`` needs besides
the weights (:mod:`attnmel_cli.io.run_state`); ``metrics.csv`` has one row per epoch. Each file is
replaced atomically, and Ctrl-C waits until all of an epoch's files are written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from torch import Tensor

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import refuse_unless_forced, write_text_atomic
from attnmel_cli.io.checkpoint import CheckpointMeta, read_tensors
from attnmel_cli.io.model_checkpoint import save_checkpoint
from attnmel_cli.io.run_state import RunState, load_state_weights, save_run_state
from attnmel_cli.models.attnmel import AttnMelNet

LAST, BEST, STATE, METRICS = (
    "last.safetensors", "best.safetensors", "last.state.safetensors", "metrics.csv",
)
AVERAGED = "averaged.safetensors"  # weights averaged over the last epochs (--average-last)
LOCK = ".attnmel.lock"  # held by the run using the dir
RUN_FILES = (LAST, BEST, STATE, METRICS, AVERAGED)


def epoch_name(epoch: int) -> str:
    """File kept for one of the last epochs that ``--average-last`` averages."""
    return f"epoch-{epoch:03d}.safetensors"
METRICS_COLUMNS = (
    "epoch", "train_loss", "train_focal", "train_dice3", "train_dice4", "lr",
    "val_loss", "val_ap", "val_auc", "seconds",
)


_LOCKS: dict[Path, int] = {}  # run dir → open lock file, held until this process ends


def _lock(out: Path) -> None:
    """Hold an exclusive lock on ``out/.attnmel.lock`` for the life of this process (the kernel
    drops it when the process ends, however it ends), so that two runs never share a run dir."""
    key = out.resolve()
    if key in _LOCKS or fcntl is None:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise AttnMelError(f"{out}: cannot use as a run dir ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise AttnMelError(f"{out}: another attnmel train is running in it") from None
    _LOCKS[key] = fd


def _remove_temporaries(out: Path) -> None:
    """Temporary files of writes that a kill interrupted (``.last.safetensors.*.tmp``…)."""
    prefixes = (*(f".{name}." for name in RUN_FILES), ".epoch-")
    for tmp in out.glob(".*.tmp"):
        if tmp.name.startswith(prefixes):
            tmp.unlink(missing_ok=True)


def claim_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Check ``out`` for a new run (refusing an existing one unless ``force``) or a resume, and
    lock it against a second run."""
    if out.exists() and not out.is_dir():
        raise AttnMelError(f"{out}: exists and is not a folder")
    if resume:
        if not (out / STATE).is_file() or not (out / LAST).is_file():
            raise AttnMelError(f"{out}: no interrupted run to resume (needs {LAST} and {STATE})")
        _lock(out)
        _remove_temporaries(out)
        return
    present = [name for name in RUN_FILES if (out / name).exists()]
    present += sorted(p.name for p in out.glob(epoch_name(0).replace("000", "*")))
    refuse_unless_forced(
        out if present else None, force=force, what=f"already holds a run ({', '.join(present)})",
        hint="pass --resume to continue it or --force to start over",
    )
    _lock(out)
    for name in present:
        (out / name).unlink()
    _remove_temporaries(out)


def last_weights(out: Path, epoch: int) -> dict[str, Tensor]:
    """The weights to resume from: those saved in the state file itself (always of its epoch,
    even when a kill came between writing ``last`` and the state); for a state file without
    them, ``last.safetensors``, checked to belong to the state's ``epoch``."""
    weights = load_state_weights(out / STATE)
    if weights:
        return weights
    tensors, header = read_tensors(out / LAST)
    saved = CheckpointMeta.from_header(out / LAST, header).metrics.get("epoch")
    if saved != epoch:
        raise AttnMelError(
            f"{out}: {LAST} (epoch {saved}) and {STATE} (epoch {epoch}) disagree; the run was "
            "stopped while saving: start over with --force"
        )
    return tensors


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then raise KeyboardInterrupt if it came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def metrics_csv(history: list[dict[str, float]]) -> str:
    """``metrics.csv`` text: one row per epoch, floats at full precision."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: int(v) if k == "epoch" else repr(float(v)) for k, v in row.items()})
    return buf.getvalue()


def save_epoch(
    out: Path, model: AttnMelNet, meta: CheckpointMeta, state: RunState, *, is_best: bool,
    snapshot: bool = False,
) -> None:
    """Write metrics.csv, best (when ``is_best``), the epoch's snapshot (when ``snapshot``, for
    ``--average-last``), last and its state for ``state.epoch``; the state file goes last, so an
    epoch counts as done only when all of its files are on disk.

    The checkpoints' ``metrics`` are the epoch's row of ``state.history``.
    """
    meta.metrics = dict(state.history[-1])
    with deferred_interrupt():
        write_text_atomic(out / METRICS, metrics_csv(state.history))
        if is_best:
            save_checkpoint(out / BEST, model, meta)
        if snapshot:
            save_checkpoint(out / epoch_name(state.epoch), model, meta)
        save_checkpoint(out / LAST, model, meta)
        save_run_state(out / STATE, state, model.state_dict())  # last: it makes the epoch count
