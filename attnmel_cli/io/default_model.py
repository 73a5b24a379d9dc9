"""Which model a command scores: ``--checkpoint``, ``$ATTNMEL_CHECKPOINT`` or the shipped default
model (:mod:`attnmel_cli.io.shipped`). Whether its ONNX export is scored instead:
:mod:`attnmel_cli.deploy.session`."""

from __future__ import annotations

import os
from pathlib import Path

from attnmel_cli.errors import CheckpointError
from attnmel_cli.io.shipped import shipped_file

DEFAULT_CHECKPOINT_NAME = "attnmel-default.safetensors"
DEFAULT_ONNX_NAME = "attnmel-default.onnx"  # the same model, from `attnmel export`
DEFAULT_CHECKPOINT_ENV = "ATTNMEL_CHECKPOINT"


def default_checkpoint() -> Path | None:
    """``$ATTNMEL_CHECKPOINT``, else the shipped default model (a checkout's ``weights/`` or the
    installed distribution's data files); None when no default model is installed."""
    env = os.environ.get(DEFAULT_CHECKPOINT_ENV)
    return Path(env) if env else shipped_file(DEFAULT_CHECKPOINT_NAME)


def locate(checkpoint: str | Path) -> Path:
    """``checkpoint`` as given; a bare file name that is no file here but a shipped model's
    (``attnmel-isic2017-3class.onnx``) names the shipped file, wherever it was installed."""
    path = Path(checkpoint)
    if path.exists() or path.name != str(checkpoint):
        return path
    return shipped_file(path.name) or path


def resolve_checkpoint(path: str | Path | None) -> Path:
    """The checkpoint to use: ``path`` if given (:func:`locate`), else the default model."""
    if path is not None:
        return locate(path)
    default = default_checkpoint()
    if default is None or not default.is_file():
        where = (f"neither a checkout's weights/ nor the installed attnmel distribution's files "
                 f"hold {DEFAULT_CHECKPOINT_NAME}" if default is None
                 else f"${DEFAULT_CHECKPOINT_ENV} names {default}, which is not a file")
        raise CheckpointError(f"no default model is installed ({where}); pass "
                              f"--checkpoint FILE or set {DEFAULT_CHECKPOINT_ENV}")
    return default
