"""The report's per-class section of a multi-class checkpoint (each image's true class comes from
its diagnosis, as ``train --classes`` reads it): one-vs-rest AUC and AP with 95 % intervals, the
ISIC 2017 Part 3 figure, balanced multi-class accuracy, and the confusion matrix and per-class
rates of the arg-max prediction."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from attnmel_cli.evaluation import metrics
from attnmel_cli.evaluation import multiclass as mc
from attnmel_cli.evaluation.report_types import (
    ClassFigures,
    ClassSection,
    Estimate,
    SkippedClasses,
)
from attnmel_cli.evaluation.results import Scores
from attnmel_cli.evaluation.uncertainty import bootstrap_ci

# ISIC 2017 Part 3 ranks by the mean of the melanoma and seborrheic keratosis AUCs
ISIC2017_PART3 = ("melanoma", "seborrheic_keratosis")
PREDICTION_RULE = "arg-max of the class probabilities (a tie goes to the first class)"


def interval(
    y: np.ndarray, p: np.ndarray, metric: metrics.Metric, n_boot: int, seed: int
) -> Estimate:
    """``metric(y, p)`` and its bootstrap interval (None when ``n_boot`` is 0)."""
    value = metric(y, p)
    return Estimate(value, bootstrap_ci(y, p, metric, n_boot=n_boot, seed=seed) if n_boot else None)


def multiclass_report(
    y: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, n_boot: int = 1000, seed: int = 0
) -> ClassSection:
    """Every per-class figure of true classes ``y`` (n,) scored ``probs`` (n, K) (non-finite kept
    as is: a class without images, or with nothing else, has no AUC)."""
    y, probs = mc.check_classes(y, probs)
    pred = mc.predicted_class(probs)
    cm = mc.confusion_matrix(y, pred, len(classes))
    per_class: dict[str, ClassFigures] = {}
    for c, name in enumerate(classes):
        yc, pc = mc.one_vs_rest(y, probs, c)
        both = 0 < yc.sum() < len(yc)
        auc, ap = (interval(yc, pc, fn, n_boot, seed) if both else Estimate(math.nan)
                   for fn in (metrics.roc_auc, metrics.average_precision))
        per_class[name] = ClassFigures(int(yc.sum()), auc, ap, mc.class_rates(y, pred, c))
    part3 = None
    if all(name in per_class for name in ISIC2017_PART3):
        aucs = [per_class[name].roc_auc.value for name in ISIC2017_PART3]
        part3 = (aucs[0] + aucs[1]) / 2
    return ClassSection(
        classes=tuple(classes), n_images=len(y), prediction=PREDICTION_RULE,
        balanced_accuracy=mc.balanced_multiclass_accuracy(cm),
        accuracy=float(np.trace(cm) / len(y)), per_class=per_class,
        confusion=tuple(map(tuple, cm.tolist())), isic2017_part3_mean_auc=part3,
    )


def class_section(
    sc: Scores, *, n_boot: int = 1000, seed: int = 0
) -> ClassSection | SkippedClasses:
    """:func:`multiclass_report` of a multi-class checkpoint's scores, or why it has none (the
    images' diagnoses do not name its classes)."""
    if sc.true_class is None:
        return SkippedClasses(tuple(sc.meta.classes), sc.class_problem)
    return multiclass_report(sc.true_class, sc.class_probs, sc.meta.classes, n_boot=n_boot,
                             seed=seed)
