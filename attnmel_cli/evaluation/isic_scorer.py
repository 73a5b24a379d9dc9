"""The figures the official ISIC challenge scorer (``isic-challenge-scoring``) reports for a
binary melanoma classifier beyond :mod:`attnmel_cli.evaluation.metrics`: the partial ROC AUC
above a sensitivity, and the sensitivities at which the ISIC 2017 rule reports specificity.

Pure functions over numpy arrays, with the conventions of ``metrics`` (``y`` 1 = melanoma).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc

from attnmel_cli.errors import AttnMelError
from attnmel_cli.evaluation.metrics import roc_points

SENSITIVITIES = (0.82, 0.89, 0.95)  # ISIC 2017 Part 3: specificity at these sensitivities
PARTIAL_AUC_SENSITIVITY = 0.80  # ISIC 2018–2020: ``auc_sens_80``


def partial_auc_above_sensitivity(
    y: np.ndarray, p: np.ndarray, min_sensitivity: float = PARTIAL_AUC_SENSITIVITY
) -> float:
    """The ROC area where sensitivity >= ``min_sensitivity`` (the scorer's ``auc_sens_80``).

    The area under the ROC curve (sensitivity against 1 − specificity, straight lines between
    the points of every threshold) to the right of the false-positive rate at which the curve
    first reaches ``min_sensitivity`` (linearly interpolated between the two points around it).
    Not standardised (unlike scikit-learn's ``roc_auc_score(max_fpr=…)``, which bounds the false-
    positive rate, not the sensitivity): it lies between ``min_sensitivity``·(1 − fpr₀) and
    1 − fpr₀, and a perfect classifier gets 1.
    """
    if not 0 < min_sensitivity <= 1:
        raise AttnMelError(f"the partial AUC needs a sensitivity in (0, 1]; got {min_sensitivity}")
    fpr, tpr, _ = roc_points(y, p, "the partial AUC")
    i = int(np.argmax(tpr >= min_sensitivity))  # >= 1: the curve starts at sensitivity 0
    fpr0 = float(np.interp(min_sensitivity, tpr[i - 1 : i + 1], fpr[i - 1 : i + 1]))
    return float(auc(np.r_[fpr0, fpr[i:]], np.r_[min_sensitivity, tpr[i:]]))
