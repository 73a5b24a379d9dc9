"""Evaluation metrics: pure functions over numpy arrays (no torch, no files); their bootstrap
intervals and DeLong's test: :mod:`attnmel_cli.evaluation.uncertainty`.

Conventions shared by every function here:

- ``y`` holds labels, 1 = melanoma, 0 = anything else; ``p`` holds melanoma probabilities.
- An image is called positive when ``p >= threshold`` (scikit-learn's ``roc_curve`` convention,
  so every threshold it returns reproduces its own ROC point through :func:`threshold_metrics`).
  The ISIC challenge scorer calls it positive when ``p > 0.5``: the two differ only for an image
  scored exactly at the threshold.
- A rate whose denominator is zero (e.g. precision with no positive call) is ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from attnmel_cli.errors import AttnMelError

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class ThresholdMetrics:
    """Figures of the binary decision ``p >= threshold`` (precision is the PPV; f1 the Dice
    coefficient of the ISIC scorer)."""

    threshold: float
    sensitivity: float
    specificity: float
    precision: float
    balanced_accuracy: float
    npv: float
    accuracy: float
    f1: float
    tn: int
    fp: int
    fn: int
    tp: int


@dataclass(frozen=True)
class OperatingPoint:
    """One point of the ROC curve and the threshold that reaches it (``inf``: call nothing)."""

    threshold: float
    sensitivity: float
    specificity: float


@dataclass(frozen=True)
class CalibrationBins:
    """Equal-width probability bins: mean probability, melanoma fraction and count per bin."""

    edges: np.ndarray
    mean_probability: np.ndarray
    fraction_positive: np.ndarray
    count: np.ndarray


def labels_scores(
    y: np.ndarray, p: np.ndarray, what: str = "probabilities"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``y`` as int array and ``p`` as float array of equal length."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    if y.ndim != 1 or p.ndim != 1:
        raise AttnMelError(f"labels and {what} must be 1-D arrays")
    if len(y) != len(p):
        raise AttnMelError(f"labels and {what} differ in length ({len(y)} vs {len(p)})")
    if len(y) == 0:
        raise AttnMelError("no images to evaluate")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise AttnMelError(f"labels must be 0 or 1; found {y[bad][0]!r}")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise AttnMelError(f"{what} must be finite numbers in [0, 1]")
    return y.astype(int), p


def require_both_classes(y: np.ndarray, what: str) -> None:
    """Raise when ``y`` lacks melanoma or non-melanoma images."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        only = "melanoma" if n_pos else "non-melanoma"
        raise AttnMelError(
            f"{what} needs both melanoma and non-melanoma images; "
            f"all {len(y)} labelled images are {only}"
        )


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision, exactly scikit-learn's ``average_precision_score`` (paper §3.1)."""
    y, p = labels_scores(y, p)
    require_both_classes(y, "average precision")
    return float(average_precision_score(y, p))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve, exactly scikit-learn's ``roc_auc_score`` (paper §3.1)."""
    y, p = labels_scores(y, p)
    require_both_classes(y, "ROC AUC")
    return float(roc_auc_score(y, p))


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


def threshold_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> ThresholdMetrics:
    """Sensitivity, specificity, precision (PPV), balanced accuracy, NPV, accuracy, F1 (Dice:
    2·TP / (2·TP + FP + FN)) and the confusion matrix of ``p >= threshold``."""
    y, p = labels_scores(y, p)
    pred = p >= threshold
    truth = y == 1
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    tn = int(np.sum(~pred & ~truth))
    sens, spec = _rate(tp, tp + fn), _rate(tn, tn + fp)
    return ThresholdMetrics(
        threshold=float(threshold),
        sensitivity=sens,
        specificity=spec,
        precision=_rate(tp, tp + fp),
        balanced_accuracy=(sens + spec) / 2,
        npv=_rate(tn, tn + fn),
        accuracy=(tp + tn) / len(y),
        f1=_rate(2 * tp, 2 * tp + fp + fn),
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
    )


def roc_points(
    y: np.ndarray, p: np.ndarray, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated full ROC curve ``(fpr, tpr, thresholds)``, every threshold kept."""
    y, p = labels_scores(y, p)
    require_both_classes(y, what)
    return roc_curve(y, p, drop_intermediate=False)


def sensitivity_at_specificity(y: np.ndarray, p: np.ndarray, specificity: float) -> OperatingPoint:
    """Highest sensitivity among the ROC operating points whose specificity is >= ``specificity``.

    No interpolation between points: the answer is always reachable with the returned threshold.
    This is the rule the ISIC 2017 scorer applies, mirrored (it reports specificity at the first
    ROC point whose sensitivity reaches 82/89/95 %). Among equally sensitive points the most
    specific (highest threshold) wins.
    """
    if not 0 <= specificity <= 1:
        raise AttnMelError(f"target specificity must lie in [0, 1]; got {specificity}")
    fpr, tpr, thr = roc_points(y, p, "sensitivity at fixed specificity")
    # 1e-12: float slack so that e.g. 8 of 10 negatives counts as 80 %; the first point
    # (threshold inf, specificity 1) always qualifies
    ok = (1 - fpr) >= specificity - 1e-12
    i = int(np.argmax(np.where(ok, tpr, -1.0)))
    return OperatingPoint(float(thr[i]), float(tpr[i]), float(1 - fpr[i]))


def specificity_at_sensitivity(
    y: np.ndarray, p: np.ndarray, sensitivity: float
) -> OperatingPoint:
    """Highest specificity among the ROC operating points whose sensitivity is >= ``sensitivity``.

    The ISIC 2017 scorer's rule (it reports the specificity at 82, 89 and 95 % sensitivity): the
    first ROC point, from the highest threshold down, whose sensitivity reaches the target, no
    interpolation. Among equally specific points the most sensitive (lowest threshold) wins.
    """
    if not 0 <= sensitivity <= 1:
        raise AttnMelError(f"target sensitivity must lie in [0, 1]; got {sensitivity}")
    fpr, tpr, thr = roc_points(y, p, "specificity at fixed sensitivity")
    # 1e-12: float slack, as above; the last point (every image called) always qualifies
    ok = tpr >= sensitivity - 1e-12
    best = np.where(ok, 1 - fpr, -1.0)
    i = len(best) - 1 - int(np.argmax(best[::-1]))  # the last = lowest threshold among ties
    return OperatingPoint(float(thr[i]), float(tpr[i]), float(1 - fpr[i]))


def youden_threshold(y: np.ndarray, p: np.ndarray) -> OperatingPoint:
    """The ROC point maximising Youden's J = sensitivity + specificity - 1.

    Meant to choose a decision threshold on the validation split; ties go to the highest threshold.
    """
    fpr, tpr, thr = roc_points(y, p, "choosing a threshold")
    # The point at threshold inf calls nothing: it is no decision rule, so it never wins.
    j = np.where(np.isfinite(thr), tpr - fpr, -np.inf)
    i = int(np.argmax(j >= j.max() - 1e-12))  # first = highest threshold; 1e-12: float slack
    return OperatingPoint(float(thr[i]), float(tpr[i]), float(1 - fpr[i]))


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> CalibrationBins:
    """Group ``p`` into ``n_bins`` equal-width bins [k/n, (k+1)/n) (the last one closed at 1).

    Empty bins have count 0 and ``nan`` means.
    """
    y, p = labels_scores(y, p)
    if n_bins < 1:
        raise AttnMelError(f"calibration needs at least 1 bin; got {n_bins}")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / count
        frac = np.bincount(idx, weights=y, minlength=n_bins) / count
    return CalibrationBins(np.linspace(0, 1, n_bins + 1), mean_p, frac, count)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the melanoma probability: sum over bins of |B|/N * |fraction melanoma - mean p|."""
    bins = calibration_bins(y, p, n_bins)
    used = bins.count > 0
    gaps = np.abs(bins.fraction_positive[used] - bins.mean_probability[used])
    return float(np.sum(bins.count[used] * gaps) / bins.count.sum())


def jaccard(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Jaccard index |A ∩ B| / |A ∪ B| of two masks (nonzero = foreground).

    Two empty masks agree perfectly: 1.0 (as the ISIC challenge scorer does).
    """
    a, b = np.asarray(pred_mask) != 0, np.asarray(true_mask) != 0
    if a.shape != b.shape:
        raise AttnMelError(f"mask shapes differ ({a.shape} vs {b.shape})")
    union = int(np.sum(a | b))
    return int(np.sum(a & b)) / union if union else 1.0


def attention_jaccard(attn_map: np.ndarray, lesion_mask: np.ndarray) -> float:
    """Jaccard of an attention map against a lesion mask by the paper's Table 3 protocol (§3.3).

    The map is min–max re-normalised to [0, 1], upsampled bilinearly (half-pixel centres, as
    ``F.interpolate(..., align_corners=False)``) to the mask's size, binarised (attended where
    >= 0.5) and compared with the mask (nonzero = lesion). A constant map localises nothing: it
    binarises to an empty mask, as ``(a - min) / (max - min + eps)`` would, scoring 0 against any
    lesion (and 1 against an empty mask).
    """
    a = np.asarray(attn_map, dtype=np.float32)
    mask = np.asarray(lesion_mask)
    if a.ndim != 2 or mask.ndim != 2 or a.size == 0 or mask.size == 0:
        raise AttnMelError(
            f"attention map and lesion mask must be non-empty 2-D arrays; "
            f"got shapes {a.shape} and {mask.shape}"
        )
    if not np.isfinite(a).all():
        raise AttnMelError("attention map holds non-finite values")
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if a.shape != mask.shape:
        a = cv2.resize(a, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
    return jaccard(a >= 0.5, mask)
