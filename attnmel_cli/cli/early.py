"""What a user typed, checked before torch (or scikit-learn) loads, so that a mistake is reported
in well under a second (``bench/bench_startup.py`` measures it)."""

from __future__ import annotations

from pathlib import Path

from attnmel_cli.deploy.onnx_deps import is_onnx
from attnmel_cli.io.checkpoint import read_metadata
from attnmel_cli.io.default_model import resolve_checkpoint


def checked_checkpoint(path: Path | None) -> Path:
    """The checkpoint to use (``path``, else the default model), its metadata validated without
    torch: a missing file, another format or foreign metadata is a one-line error now. An ONNX
    model is checked when ONNX Runtime loads it (which needs no torch either)."""
    resolved = resolve_checkpoint(path)
    if not is_onnx(resolved):
        read_metadata(resolved)
    return resolved
