"""attnmel's folder in the user's cache: converted backbone weights, checked ONNX exports."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/attnmel`` (``~/.cache/attnmel`` when unset or relative)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "attnmel"
