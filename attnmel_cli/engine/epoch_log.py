"""What the trainer tells a log of its epochs beyond ``metrics.csv`` (``train --tensorboard``:
:class:`attnmel_cli.viz.tensorboard.TensorBoardLog`, which draws the attention maps and so sits
above the engine; the command passes it in)."""

from __future__ import annotations

from collections.abc import Sequence
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
