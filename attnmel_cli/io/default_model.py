"""Where the default model is found: ``$ATTNMEL_CHECKPOINT``, a checkout's ``weights/``, or the
data files that ``pip install`` put in the environment; and when its ONNX export is scored
instead (ONNX Runtime, without torch)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from attnmel_cli.deploy.onnx_deps import is_onnx, runtime_serves
from attnmel_cli.deploy.onnx_digest import digest_mismatch
from attnmel_cli.errors import CheckpointError
from attnmel_cli.io.digest import file_sha256

log = logging.getLogger("attnmel")

DEFAULT_CHECKPOINT_NAME = "attnmel-default.safetensors"
DEFAULT_ONNX_NAME = "attnmel-default.onnx"  # the same model, from `attnmel export`
DEFAULT_CHECKPOINT_ENV = "ATTNMEL_CHECKPOINT"


def default_checkpoint(*, onnx: bool = False) -> Path:
    """``$ATTNMEL_CHECKPOINT``, else the default model: in the source tree's ``weights/`` (a
    checkout or an editable install), else where ``pip install`` put the package's data files,
    ``share/attnmel/weights/`` under the install scheme's data path (the environment's prefix,
    or the user base for ``--user``). When none holds it, the environment's place is returned.
    ``onnx``: the model's ONNX export where the first folder holding the model has one.
    """
    import sysconfig

    env = os.environ.get(DEFAULT_CHECKPOINT_ENV)
    if env:
        return Path(env)
    installed = [
        Path(sysconfig.get_path("data", scheme)) / "share" / "attnmel" / "weights"
        for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user"))
    ]
    folders = [Path(__file__).resolve().parents[2] / "weights", *installed]
    names = (DEFAULT_ONNX_NAME, DEFAULT_CHECKPOINT_NAME) if onnx else (DEFAULT_CHECKPOINT_NAME,)
    found = (f / name for f in folders for name in names)
    return next((p for p in found if p.is_file()), installed[0] / DEFAULT_CHECKPOINT_NAME)


def onnx_default(device: str) -> Path | None:
    """The default model's ONNX export, which predict and explain score when given no
    checkpoint: where ``$ATTNMEL_CHECKPOINT`` names no other model, the command does not run under
    torchrun (PyTorch splits that work), ONNX Runtime serves ``device``
    (:func:`attnmel_cli.deploy.onnx_deps.runtime_serves`), the export matches the SHA-256
    recorded beside it and is of the checkpoint beside it (its metadata holds that file's
    SHA-256). None: the checkpoint, scored by PyTorch.
    """
    if os.environ.get(DEFAULT_CHECKPOINT_ENV) or os.environ.get("WORLD_SIZE", "1") != "1":
        return None
    path = default_checkpoint(onnx=True)
    if not is_onnx(path) or not runtime_serves(device):
        return None
    damaged = digest_mismatch(path)
    if damaged:
        log.warning("%s: %s; scoring %s with PyTorch instead", path, damaged,
                    DEFAULT_CHECKPOINT_NAME)
        return None
    source = path.with_name(DEFAULT_CHECKPOINT_NAME)
    # The metadata strings are stored as plain UTF-8 in the protobuf: no parser needed.
    if source.is_file() and file_sha256(source).encode() not in path.read_bytes():
        log.warning("%s is not the export of the %s beside it: scoring that with PyTorch "
                    "(export it again: attnmel export %s --out %s --force)",
                    path, source.name, source, path)
        return None
    return path


def resolve_checkpoint(path: str | Path | None) -> Path:
    """The checkpoint to use: ``path`` if given, else the installed default model."""
    if path is not None:
        return Path(path)
    default = default_checkpoint()
    if not default.is_file():
        raise CheckpointError(
            f"no default model is installed (looked for {default}); pass --checkpoint FILE "
            f"or set {DEFAULT_CHECKPOINT_ENV}"
        )
    return default
