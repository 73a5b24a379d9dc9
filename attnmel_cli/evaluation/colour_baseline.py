"""The colour-statistics baseline every model card is measured against.

A 128-bin joint HSV histogram (8 × 4 × 4, L1-normalised) plus the per-channel mean and standard
deviation of the central 224/256 of an image, fed to a class-balanced logistic regression whose
C is chosen by an inner 5-fold search. It sees colour only, no shape or texture: a network that
does not beat it has learnt little beyond colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attnmel_cli.errors import InputError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

BINS = (8, 4, 4)  # joint H × S × V histogram
CENTRE = 224 / 256  # the share of a prepared image the network sees at its default size


def colour_features(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (134,) float32: HSV histogram, channel means and stds of the centre."""
    import cv2

    h, w = rgb.shape[:2]
    s = round(min(h, w) * CENTRE)
    top, left = (h - s) // 2, (w - s) // 2
    centre = np.ascontiguousarray(rgb[top : top + s, left : left + s])
    hsv = cv2.cvtColor(centre, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(BINS), [0, 180, 0, 256, 0, 256]).ravel()
    pixels = hsv.reshape(-1, 3).astype(np.float64)
    stats = np.concatenate([pixels.mean(0), pixels.std(0)]) / 255.0
    return np.concatenate([hist / hist.sum(), stats]).astype(np.float32)


def features_of_file(path: Path) -> np.ndarray:
    """:func:`colour_features` of an image file (a prepared 256×256 PNG, or any photo)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None
    return colour_features(rgb)


def colour_classifier(seed: int = 0) -> Pipeline:
    """Standardise, then class-balanced logistic regression with C chosen by 5-fold AUC."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(Cs=8, cv=5, scoring="roc_auc", class_weight="balanced",
                             max_iter=5000, random_state=seed),
    )
