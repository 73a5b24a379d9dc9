"""Which model a command scores: ``--checkpoint``, ``$ATTNMEL_CHECKPOINT`` or the shipped default
model (:mod:`attnmel_cli.io.shipped`); and when the ONNX export beside a checkpoint is scored
instead (ONNX Runtime, without torch)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from attnmel_cli.deploy.onnx_deps import ONNX_SUFFIX, is_onnx, runtime_serves
from attnmel_cli.errors import CheckpointError
from attnmel_cli.io.shipped import shipped_file

log = logging.getLogger("attnmel")

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


def onnx_copy(checkpoint: str | Path | None, device: str) -> Path | None:
    """The ONNX export to score instead of ``checkpoint`` (None: the default model): the
    ``.onnx`` file of the same name beside it, where the command does not run under torchrun
    (PyTorch splits that work), ONNX Runtime serves ``device``
    (:func:`attnmel_cli.deploy.onnx_deps.runtime_serves`) and the file is the fp32 export of the
    checkpoint as it is now (:func:`attnmel_cli.deploy.export_match.export_matches`, checked once
    per state of the two files). None: the checkpoint, scored by PyTorch."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        return None
    source = default_checkpoint() if checkpoint is None else locate(checkpoint)
    if source is None or is_onnx(source) or not source.is_file():
        return None
    copy = source.with_suffix(ONNX_SUFFIX)
    if not copy.is_file() or not runtime_serves(device):
        return None
    from attnmel_cli.deploy.export_match import export_matches  # lazy: only with an export

    if not export_matches(copy, source):
        log.warning("%s is not the export of the %s beside it: scoring that with PyTorch "
                    "(export it again: attnmel export %s --out %s --force)",
                    copy, source.name, source, copy)
        return None
    return copy


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
