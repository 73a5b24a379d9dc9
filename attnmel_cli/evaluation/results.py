"""What ``evaluate`` works on and produces: labelled images, one checkpoint's scores, the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnmel_cli.io.checkpoint import CheckpointMeta

SPECIFICITIES = (0.80, 0.90, 0.95)  # the ISIC challenge scorer reports the first
ECE_BINS = 10
Advance = Callable[[], None]


@dataclass(frozen=True)
class Item:
    """One labelled image; ``lesion_mask`` is aligned with it, or ``None``; ``diagnosis`` is
    the source's own class name (empty when it has none)."""

    image_id: str
    path: Path
    label: int
    lesion_mask: Path | None = None
    diagnosis: str = ""


@dataclass(frozen=True)
class EvalData:
    """The labelled images of one split (prepared dir) or of a layout never prepared;
    ``score_weight_zero``: images its ground truth weighs 0 (``score_weight``), left out."""

    source: Path
    split: str | None
    items: list[Item]
    prepared: bool
    score_weight_zero: int = 0


@dataclass
class Scores:
    """One checkpoint's results on an :class:`EvalData`, failed images left out."""

    checkpoint: Path
    name: str  # how tables, plots and predictions.csv call the checkpoint
    meta: CheckpointMeta
    ids: list[str]
    labels: np.ndarray
    probs: np.ndarray  # (n,) p_melanoma
    class_probs: np.ndarray  # (n, K) every class's probability, the checkpoint's class order
    jaccard: dict[str, np.ndarray]  # map name → per scored image (nan: no lesion mask)
    failed: list[tuple[str, str]]  # (path, error)
    # A multi-class checkpoint: the true class (n,) of each image, from its diagnosis; None
    # (binary checkpoint, or ``class_problem`` says why the diagnoses give no class)
    true_class: np.ndarray | None = None
    class_problem: str = ""


@dataclass
class Evaluation:
    """Everything ``evaluate`` computed: the JSON-ready report and the scores behind it."""

    report: dict[str, Any]
    scores: list[Scores]
