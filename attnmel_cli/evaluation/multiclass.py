"""Multi-class metrics of a K-class checkpoint: pure functions over numpy arrays (no torch, no
files).

Conventions:

- ``y`` (n,) holds class indices 0..K−1 in the checkpoint's class order; ``probs`` (n, K) the
  softmax probabilities in that order.
- The predicted class is the arg-max of ``probs``; a tie goes to the first of the tied classes
  (the ISIC scorer calls a tied image "undecided", wrong for every class).
- One-vs-rest: class c against all the others, ``y == c`` scored by ``probs[:, c]``.
"""

from __future__ import annotations

import numpy as np

from attnmel_cli.errors import AttnMelError
from attnmel_cli.evaluation.metrics import ThresholdMetrics, threshold_metrics


def check_classes(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as an int array (n,) and ``probs`` as a float array (n, K), validated."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=float)
    if y.ndim != 1 or probs.ndim != 2 or len(y) != len(probs):
        raise AttnMelError(
            f"classes (n,) and probabilities (n, K) expected; got shapes {y.shape}, {probs.shape}"
        )
    if len(y) == 0:
        raise AttnMelError("no images to evaluate")
    k = probs.shape[1]
    if k < 2 or not np.isin(y, np.arange(k)).all():
        raise AttnMelError(f"classes must be indices 0…{k - 1} of at least 2 classes")
    if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
        raise AttnMelError("class probabilities must be finite numbers in [0, 1]")
    return y.astype(int), probs


def predicted_class(probs: np.ndarray) -> np.ndarray:
    """The arg-max class (n,) of probabilities (n, K); ties go to the first class."""
    return np.argmax(np.asarray(probs, dtype=float), axis=1)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class (scikit-learn's layout)."""
    y, pred = np.asarray(y, dtype=int), np.asarray(pred, dtype=int)
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def balanced_multiclass_accuracy(cm: np.ndarray) -> float:
    """Mean over the classes that have images of the recall of each (the ISIC 2018/2019
    ranking metric; scikit-learn's ``balanced_accuracy_score``); ``nan`` without images."""
    cm = np.asarray(cm)
    n = cm.sum(axis=1)
    present = n > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / n[present]))


def one_vs_rest(y: np.ndarray, probs: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ``c`` against the rest: labels (n,) 1 = class c, and its probability (n,)."""
    return (np.asarray(y) == c).astype(int), np.asarray(probs, dtype=float)[:, c]


def class_rates(y: np.ndarray, pred: np.ndarray, c: int) -> ThresholdMetrics:
    """Sensitivity, specificity, PPV, NPV, F1… of class ``c`` against the rest, the arg-max
    prediction ``pred`` calling it (the ``threshold`` field means nothing here)."""
    called = (np.asarray(pred) == c).astype(float)
    return threshold_metrics((np.asarray(y) == c).astype(int), called, 0.5)
