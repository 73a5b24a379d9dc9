"""The uncertainty of the metrics (:mod:`attnmel_cli.evaluation.metrics`, whose conventions hold
here): the stratified percentile bootstrap interval of any of them, and DeLong's paired test of
two AUCs on the same images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attnmel_cli.errors import AttnMelError
from attnmel_cli.evaluation.metrics import Metric, labels_scores, require_both_classes


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's paired test of two AUCs on the same images (two-sided)."""

    auc1: float
    auc2: float
    z: float
    p_value: float


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    metric: Metric,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` interval of ``metric(y, p)`` at level ``1 - alpha``.

    Resampling is stratified: melanoma and non-melanoma images are each drawn with replacement
    in their own number, so every resample holds both classes and the prevalence stays fixed.
    The same ``seed`` gives the same interval.
    """
    y, p = labels_scores(y, p)
    require_both_classes(y, "a bootstrap interval")
    if n_boot < 1:
        raise AttnMelError(f"the bootstrap needs at least 1 resample; got {n_boot}")
    if not 0 < alpha < 1:
        raise AttnMelError(f"alpha must lie strictly between 0 and 1; got {alpha}")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.concatenate([rng.choice(pos, size=len(pos)), rng.choice(neg, size=len(neg))])
        stats[i] = metric(y[idx], p[idx])
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with tied values given their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # values strictly smaller than each distinct value
    return (before + (counts + 1) / 2)[inverse]


def delong_test(y: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> DeLongResult:
    """DeLong's test of AUC(p1) = AUC(p2) for two predictors scored on the same images.

    Uses the fast midrank algorithm of Sun & Xu (IEEE SPL 2014). When the difference has zero
    variance, ``z`` is 0 (p = 1) for equal AUCs and ±inf (p = 0) otherwise.
    """
    y, p1 = labels_scores(y, p1, "first probabilities")
    _, p2 = labels_scores(y, p2, "second probabilities")
    require_both_classes(y, "DeLong's test")
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    aucs, v10, v01 = [], [], []
    for s in (p1, p2):
        x, z = s[pos], s[neg]
        tx, tz, t_all = _midranks(x), _midranks(z), _midranks(np.concatenate([x, z]))
        aucs.append((t_all[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((t_all[:m] - tx) / n)  # structural components of the melanoma images
        v01.append(1 - (t_all[m:] - tz) / m)  # ... and of the other images
    s10 = np.cov(np.array(v10)) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.array(v01)) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    return DeLongResult(float(aucs[0]), float(aucs[1]), z, math.erfc(abs(z) / math.sqrt(2)))
