"""Where the default model is found: ``$ATTNMEL_CHECKPOINT``, a checkout's ``weights/``, or the
data files that ``pip install`` put in the environment."""

from __future__ import annotations

import os
from pathlib import Path

from attnmel_cli.errors import CheckpointError

DEFAULT_CHECKPOINT_NAME = "attnmel-default.safetensors"
DEFAULT_CHECKPOINT_ENV = "ATTNMEL_CHECKPOINT"


def default_checkpoint() -> Path:
    """``$ATTNMEL_CHECKPOINT``, else the default model: in the source tree's ``weights/`` (a
    checkout or an editable install), else where ``pip install`` put the package's data files,
    ``share/attnmel/weights/`` under the install scheme's data path (the environment's prefix,
    or the user base for ``--user``). When none holds it, the environment's place is returned.
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
    found = (f / DEFAULT_CHECKPOINT_NAME for f in folders)
    return next((p for p in found if p.is_file()), installed[0] / DEFAULT_CHECKPOINT_NAME)


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
