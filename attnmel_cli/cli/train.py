"""``attnmel train``: its flags are generated from :class:`attnmel_cli.config.TrainConfig`
(one list: each field's metadata holds its flag and help text); prints the best checkpoint."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Annotated, Any

import typer

from attnmel_cli.cli.console import log, progress
from attnmel_cli.config import TrainConfig


def _parameters() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, annotated with its Typer option."""
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        decls, text = meta.pop("decls"), meta.pop("help")
        default: Any = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        shown = default is not inspect.Parameter.empty and default is not None
        option = typer.Option(*decls, help=text, show_default=shown, **meta)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[hints[f.name], option]))
    return params


def train_command(**options: Any) -> None:
    """Train a model (the paper's recipe by default); print the best checkpoint's path on stdout.

    Several GPUs or machines: ``torchrun --nproc_per_node N -m attnmel_cli train …``
    (--batch-size stays the global batch).
    """
    from attnmel_cli.engine.distributed import from_env  # lazy: torch
    from attnmel_cli.engine.trainer import train  # lazy: imports scikit-learn
    from attnmel_cli.io.run_dir import BEST
    from attnmel_cli.viz.tensorboard import TensorBoardLog  # lazy: torch

    result = train(TrainConfig(**options), progress=progress, epoch_log=TensorBoardLog)
    if from_env().is_main:
        log.info("best epoch %d: validation AUC %.4f", result.best_epoch, result.best_auc)
        typer.echo(result.run_dir / BEST)


train_command.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
