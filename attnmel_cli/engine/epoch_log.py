"""What the trainer tells those watching it, each handed in by the command: a log of its
epochs beyond ``metrics.csv`` (``train --tensorboard``:
:class:`attnmel_cli.viz.tensorboard.TensorBoardLog`, which draws the attention maps and so sits
above the engine) and the progress bar its epochs advance (the CLI's
:func:`attnmel_cli.cli.console.progress`; the engine draws nothing itself)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attnmel_cli.errors import AttnMelError

if TYPE_CHECKING:
    import torch

    from attnmel_cli.data.manifest import Row
    from attnmel_cli.io.checkpoint import CheckpointMeta
    from attnmel_cli.models.attnmel import AttnMelNet

MISSING = ("--tensorboard needs the tensorboard package: pip install 'attnmel[tensorboard]' "
           "(or pip install tensorboard)")


def require_tensorboard() -> None:
    """Raise the one-line install hint when TensorBoard's writer cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise AttnMelError(MISSING) from None


class EpochLog(Protocol):
    """Told each epoch's ``metrics.csv`` row and the model after it; closed at the end."""

    def log_epoch(self, record: dict[str, float], model: AttnMelNet, meta: CheckpointMeta,
                  device: torch.device) -> None: ...

    def close(self) -> None: ...


class EpochLogFactory(Protocol):
    """Opens the :class:`EpochLog` of a run (``resume_after``: the epoch a resumed run
    continues from)."""

    def __call__(self, log_dir: Path, data: Path, val_rows: Sequence[Row],
                 train_config: dict[str, Any], *, resume_after: int | None = None) -> EpochLog: ...


class Bar(Protocol):
    """A progress display of tasks (``rich.progress.Progress`` is one): what the trainer shows
    its epochs on. The command hands the trainer a :data:`ProgressFactory`."""

    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...

    def remove_task(self, task_id: Any) -> None: ...


ProgressFactory = Callable[[], AbstractContextManager[Bar]]


class NoBar:
    """A :class:`Bar` that shows nothing (no progress factory given)."""

    def add_task(self, description: str, *, total: float | None = None) -> int:
        return 0

    def advance(self, task_id: Any, advance: float = 1) -> None:
        pass

    def remove_task(self, task_id: Any) -> None:
        pass


def no_progress() -> AbstractContextManager[Bar]:
    """The default :data:`ProgressFactory`: nothing shown."""
    return nullcontext(NoBar())
