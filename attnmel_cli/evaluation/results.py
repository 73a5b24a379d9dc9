"""What ``evaluate`` works on and produces: labelled images, one checkpoint's scores, the report
(its blocks: :mod:`attnmel_cli.evaluation.report_types`), built once
(:mod:`attnmel_cli.evaluation.report`), read by attribute by everything that shows it, and
written as JSON through ``as_record``: the dict of ``report.json``, its keys in their order,
non-finite figures kept as they are."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attnmel_cli.evaluation.report_types import (
    AtThreshold,
    Bootstrap,
    CalibrationError,
    ClassSection,
    Comparison,
    Estimate,
    Failure,
    MapJaccard,
    PartialAuc,
    SkippedClasses,
    Threshold,
    TrainingOverlap,
)
from attnmel_cli.io.checkpoint import CheckpointMeta

if TYPE_CHECKING:
    from attnmel_cli.evaluation.metrics import OperatingPoint

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


def _metadata(meta: CheckpointMeta) -> dict[str, Any]:
    """A checkpoint's metadata as the report shows it (no training image ids)."""
    fields = {k: v for k, v in asdict(meta).items() if k != "train_image_ids"}
    return {**fields, "preprocessing": meta.preprocessing}


def _by_target(points: Mapping[float, OperatingPoint]) -> dict[str, dict[str, float]]:
    """Operating points keyed by their target rate written with two decimals (``"0.80"``)."""
    return {f"{target:.2f}": asdict(point) for target, point in points.items()}


@dataclass(frozen=True)
class CheckpointReport:
    """Every figure of one checkpoint on the images it scored (operating points by their
    target rate); ``training_overlap`` None where it was not checked."""

    checkpoint: Path
    name: str
    meta: CheckpointMeta
    n_images: int
    n_melanoma: int
    average_precision: Estimate
    roc_auc: Estimate
    roc_auc_above_sensitivity: PartialAuc
    threshold: Threshold
    at_threshold: AtThreshold
    sensitivity_at_specificity: Mapping[float, OperatingPoint]
    specificity_at_sensitivity: Mapping[float, OperatingPoint]
    expected_calibration_error: CalibrationError
    multiclass: ClassSection | SkippedClasses | None = None  # None: a binary checkpoint
    attention_jaccard: Mapping[str, MapJaccard] = field(default_factory=dict)
    training_overlap: TrainingOverlap | None = None

    @property
    def class_section(self) -> ClassSection | None:
        """The per-class figures (None: binary, or skipped)."""
        return self.multiclass if isinstance(self.multiclass, ClassSection) else None

    @property
    def classes_skipped(self) -> str | None:
        """Why a multi-class checkpoint has no per-class figures (None: it has, or is binary)."""
        return self.multiclass.skipped if isinstance(self.multiclass, SkippedClasses) else None

    @property
    def trained_on_evaluated_images(self) -> bool:
        """Whether it trained on some of the evaluated images."""
        overlap = self.training_overlap
        return overlap is not None and overlap.trained_on_evaluated_images

    def as_record(self) -> dict[str, Any]:
        """The checkpoint's entry of ``report.json``."""
        record: dict[str, Any] = {
            "checkpoint": str(self.checkpoint), "name": self.name,
            "metadata": _metadata(self.meta),
            "n_images": self.n_images, "n_melanoma": self.n_melanoma,
            "average_precision": self.average_precision.as_record(),
            "roc_auc": self.roc_auc.as_record(),
            "roc_auc_above_sensitivity": self.roc_auc_above_sensitivity.as_record(),
            "threshold": self.threshold.as_record(),
            "at_threshold": self.at_threshold.as_record(),
            "sensitivity_at_specificity": _by_target(self.sensitivity_at_specificity),
            "specificity_at_sensitivity": _by_target(self.specificity_at_sensitivity),
            "expected_calibration_error": self.expected_calibration_error.as_record(),
        }
        if self.multiclass is not None:
            record["multiclass"] = self.multiclass.as_record()
        if self.attention_jaccard:
            record["attention_jaccard"] = {
                name: j.as_record() for name, j in self.attention_jaccard.items()
            }
        if self.training_overlap is not None:
            record["training_overlap"] = self.training_overlap.as_record()
        return record


@dataclass(frozen=True)
class Report:
    """The whole evaluation: the data (``n_images``: the images every checkpoint scored; those
    that failed and those the ground truth weighs 0 are not in it), the bootstrap, each
    checkpoint's figures, the comparisons of each with the first, and every image that failed."""

    attnmel_version: str
    data: str
    split: str | None
    n_images: int
    score_weight_zero: int
    bootstrap: Bootstrap
    checkpoints: tuple[CheckpointReport, ...]
    comparisons: tuple[Comparison, ...]
    failed: tuple[Failure, ...]

    @property
    def trained_on_evaluated_images(self) -> bool:
        """Whether any checkpoint trained on some of these images (each says how many)."""
        return any(r.trained_on_evaluated_images for r in self.checkpoints)

    def as_record(self) -> dict[str, Any]:
        """``report.json`` (what ``evaluate --format json`` prints) before non-finite figures
        become null (:func:`attnmel_cli.evaluation.rendering.report_json`)."""
        return {
            "attnmel_version": self.attnmel_version, "data": self.data, "split": self.split,
            "trained_on_evaluated_images": self.trained_on_evaluated_images,
            "n_images": self.n_images, "n_failed": len(self.failed),
            "score_weight_zero": self.score_weight_zero,
            "bootstrap": self.bootstrap.as_record(),
            "checkpoints": [r.as_record() for r in self.checkpoints],
            "comparisons": [c.as_record() for c in self.comparisons],
            "failed": [f.as_record() for f in self.failed],
        }


@dataclass
class Evaluation:
    """Everything ``evaluate`` computed: the report and the scores behind it."""

    report: Report
    scores: list[Scores]
