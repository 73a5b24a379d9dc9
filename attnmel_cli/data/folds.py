"""Stratified k-fold cross-validation over a prepared dir's train and val splits.

The 150-image ISIC 2017 validation split (30 melanomas) has an AUC standard error near 0.05:
it cannot tell two recipes apart. ``attnmel train --folds K --fold I`` pools train + val,
splits them into K folds stratified by label, and holds fold I out as the validation set.
The assignment depends only on the image ids, labels and the seed, never on the row order.
Where the manifest names lesions (HAM10000's ``lesion_id``) the folds are grouped: all photographs
of one lesion fall in the same fold (scikit-learn's ``StratifiedGroupKFold``); without lesion ids
they are the plain stratified folds of earlier versions, image for image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attnmel_cli.data.manifest import Row, group_of
from attnmel_cli.errors import DataError

CV_SPLITS = ("train", "val")  # the splits pooled for cross-validation; test is never touched


def fold_of(rows: Sequence[Row], folds: int, seed: int = 0) -> dict[str, int]:
    """image_id → fold in [0, folds): each fold holds about 1/folds of each label."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    pool = sorted((r for r in rows if r.split in CV_SPLITS), key=lambda r: r.image_id)
    labels = np.array([r.label for r in pool])
    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    per_class = np.bincount(labels, minlength=2)
    if per_class.min() < folds:
        raise DataError(
            f"{folds} folds need at least {folds} images of each label in train + val "
            f"(have {per_class[1]} melanoma, {per_class[0]} other)"
        )
    assignment: dict[str, int] = {}
    if any(r.lesion_id for r in pool):
        groups = [group_of(r) for r in pool]
        if len(set(groups)) < folds:
            raise DataError(f"{folds} folds need at least {folds} lesions in train + val")
        splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
            np.zeros(len(pool)), labels, groups)
    else:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(
            np.zeros(len(pool)), labels)
    for fold, (_, held_out) in enumerate(splits):
        for i in held_out:
            assignment[pool[i].image_id] = fold
    return assignment


def fold_split(
    rows: Sequence[Row], folds: int, fold: int, seed: int = 0
) -> tuple[list[Row], list[Row]]:
    """(training rows, held-out rows) of fold ``fold`` of ``folds`` over train + val."""
    if not 0 <= fold < folds:
        raise DataError(f"--fold must be between 0 and {folds - 1}, got {fold}")
    assignment = fold_of(rows, folds, seed)
    pool = [r for r in rows if r.image_id in assignment]
    return ([r for r in pool if assignment[r.image_id] != fold],
            [r for r in pool if assignment[r.image_id] == fold])
