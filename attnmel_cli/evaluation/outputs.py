"""What ``evaluate`` checks before it loads anything heavy (no torch, scikit-learn or
matplotlib here): its ``--threshold`` and the files its ``--out`` folder will hold."""

from __future__ import annotations

import math
from pathlib import Path

from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import ensure_dir, refuse_unless_forced

CLASS_PLOTS = ("roc_classes.png", "pr_classes.png", "confusion_matrix.png")
OUTPUT_FILES = (
    "predictions.csv", "report.json", "roc.png", "pr.png", "reliability.png", "report.html",
    *CLASS_PLOTS,
)


def parse_threshold(text: str) -> float | None:
    """``--threshold``: a probability in [0, 1], or ``val`` (→ ``None``: choose on validation)."""
    if text.strip().lower() == "val":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise AttnMelError(f"--threshold must be a probability in [0, 1] or 'val'; got {text!r}")
    return value


def check_outputs(out: Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` that holds evaluate's files unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise AttnMelError(f"{out}: exists and is not a folder")
    existing = (out / f for f in OUTPUT_FILES if (out / f).exists())
    refuse_unless_forced(next(existing, None), force=overwrite)
    ensure_dir(out)  # fail now, not after scoring, where the folder cannot be written
