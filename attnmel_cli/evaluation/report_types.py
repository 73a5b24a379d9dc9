"""The blocks of ``evaluate``'s report (:class:`attnmel_cli.evaluation.results.Report`) as typed,
frozen records, each written as JSON through ``as_record`` (the per-class section is built by
:mod:`attnmel_cli.evaluation.class_report`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: no scikit-learn to load
    from attnmel_cli.evaluation.metrics import ThresholdMetrics


class _Flat:
    """A record whose JSON is its fields, in order."""

    def as_record(self) -> dict[str, Any]:
        """The JSON-ready dict."""
        return asdict(self)  # every subclass is a dataclass


@dataclass(frozen=True)
class Estimate:
    """A figure and its 95 % bootstrap interval (None: no bootstrap, or no figure)."""

    value: float
    ci95: tuple[float, float] | None = None

    def as_record(self) -> dict[str, Any]:
        """``{"value", "ci95"}``."""
        return {"value": self.value, "ci95": None if self.ci95 is None else list(self.ci95)}


@dataclass(frozen=True)
class PartialAuc:
    """The ROC area above a sensitivity (the ISIC scorer's ``auc_sens_80``)."""

    min_sensitivity: float
    auc: Estimate

    def as_record(self) -> dict[str, Any]:
        """``{"min_sensitivity", "value", "ci95"}``."""
        return {"min_sensitivity": self.min_sensitivity, **self.auc.as_record()}


@dataclass(frozen=True)
class Threshold(_Flat):
    """The decision threshold on p_melanoma, where it comes from, and the rule applying it."""

    value: float
    source: str
    rule: str


@dataclass(frozen=True)
class AtThreshold:
    """The figures of the decision at the threshold; ``n_at_threshold``: images scored exactly
    at it (the ISIC scorer's ``p > t`` calls them otherwise)."""

    rates: ThresholdMetrics
    n_at_threshold: int

    def as_record(self) -> dict[str, Any]:
        """The rates, the confusion matrix and ``n_at_threshold``."""
        r = self.rates
        return {
            "sensitivity": r.sensitivity, "specificity": r.specificity, "precision": r.precision,
            "balanced_accuracy": r.balanced_accuracy, "npv": r.npv, "accuracy": r.accuracy,
            "f1": r.f1, "confusion_matrix": {"tn": r.tn, "fp": r.fp, "fn": r.fn, "tp": r.tp},
            "n_at_threshold": self.n_at_threshold,
        }


@dataclass(frozen=True)
class CalibrationError(_Flat):
    """The expected calibration error over ``bins`` equal-width bins."""

    value: float
    bins: int


@dataclass(frozen=True)
class MapJaccard(_Flat):
    """An attention map's mean Jaccard (Table 3) over the ``n_images`` with a lesion mask
    (None: none has one)."""

    mean: float | None
    n_images: int


@dataclass(frozen=True)
class TrainingOverlap(_Flat):
    """How many of the evaluated images a checkpoint trained on (``of``: all of them), by what
    ``evidence``; ``known`` is false when nothing tells (a checkpoint from before 0.2)."""

    trained_on_evaluated_images: bool
    images: int
    of: int
    evidence: str
    known: bool

    def sentence(self, name: str) -> str:
        """One line for people: ``NAME trained on 150 of these 150 images (evidence): …``."""
        return (f"{name} trained on {self.images} of these {self.of} images ({self.evidence}): "
                "its figures here are not an estimate of its accuracy on new images")


@dataclass(frozen=True)
class ClassFigures:
    """One class against the rest: its images, AUC and AP (nan where it has no images, or
    nothing else), and the rates of the arg-max prediction calling it."""

    n_images: int
    roc_auc: Estimate
    average_precision: Estimate
    rates: ThresholdMetrics

    def as_record(self) -> dict[str, Any]:
        """Images, AUC, AP, then sensitivity, specificity, precision, NPV and F1."""
        r = self.rates
        return {
            "n_images": self.n_images, "roc_auc": self.roc_auc.as_record(),
            "average_precision": self.average_precision.as_record(),
            "sensitivity": r.sensitivity, "specificity": r.specificity, "precision": r.precision,
            "npv": r.npv, "f1": r.f1,
        }


@dataclass(frozen=True)
class ClassSection:
    """A multi-class checkpoint's per-class figures; ``confusion`` counts true classes (rows)
    against predicted ones; ``isic2017_part3_mean_auc`` None without both of its classes."""

    classes: tuple[str, ...]
    n_images: int
    prediction: str
    balanced_accuracy: float
    accuracy: float
    per_class: Mapping[str, ClassFigures]
    confusion: tuple[tuple[int, ...], ...]
    isic2017_part3_mean_auc: float | None = None

    def as_record(self) -> dict[str, Any]:
        """The section as ``report.json`` holds it (no Part 3 key when it has no mean)."""
        record: dict[str, Any] = {
            "classes": list(self.classes), "n_images": self.n_images,
            "prediction": self.prediction, "balanced_accuracy": self.balanced_accuracy,
            "accuracy": self.accuracy,
            "per_class": {name: c.as_record() for name, c in self.per_class.items()},
            "confusion_matrix": {"rows": "true class", "columns": "predicted class",
                                 "counts": [list(row) for row in self.confusion]},
        }
        if self.isic2017_part3_mean_auc is not None:
            record["isic2017_part3_mean_auc"] = self.isic2017_part3_mean_auc
        return record


@dataclass(frozen=True)
class SkippedClasses:
    """A multi-class checkpoint without per-class figures, and why (the diagnoses of the images
    do not name its classes)."""

    classes: tuple[str, ...]
    skipped: str

    def as_record(self) -> dict[str, Any]:
        """``{"classes", "skipped"}``."""
        return {"classes": list(self.classes), "skipped": self.skipped}


@dataclass(frozen=True)
class Comparison(_Flat):
    """A paired test of ``checkpoint_b``'s AUC against ``checkpoint_a``'s on the images both
    scored."""

    checkpoint_a: str
    checkpoint_b: str
    n_images: int
    test: str
    auc_a: float
    auc_b: float
    z: float
    p_value: float


@dataclass(frozen=True)
class Bootstrap(_Flat):
    """How the 95 % intervals were drawn."""

    resamples: int
    seed: int
    confidence: float = 0.95
    method: str = "percentile, resampling melanoma and other images separately"


@dataclass(frozen=True)
class Failure(_Flat):
    """An image no checkpoint could score, and why."""

    path: str
    error: str
