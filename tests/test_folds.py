"""Stratified k-fold cross-validation over train + val (data/folds.py)."""

from __future__ import annotations

import random

import pytest

from attnmel_cli.data.folds import fold_of, fold_split
from attnmel_cli.data.manifest import Row
from attnmel_cli.errors import DataError


def _rows(n: int = 60) -> list[Row]:
    splits = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    return [Row(f"ISIC_{i:07d}", splits[i], int(i % 5 == 0), "", f"images/{i}.png", None, None,
                "", "") for i in range(n)]


def test_folds_partition_train_and_val_stratified_and_never_test() -> None:
    rows = _rows()
    assignment = fold_of(rows, 3, seed=0)
    pool = [r for r in rows if r.split != "test"]
    assert set(assignment) == {r.image_id for r in pool}
    for k in range(3):
        train, held = fold_split(rows, 3, k)
        assert {r.image_id for r in train}.isdisjoint(r.image_id for r in held)
        assert len(train) + len(held) == len(pool)
        assert all(r.split != "test" for r in train + held)
        assert sum(r.label for r in held) in (3, 4)  # 10 melanomas over 3 folds


def test_folds_depend_on_ids_and_seed_not_row_order() -> None:
    rows = _rows()
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert fold_of(rows, 3) == fold_of(shuffled, 3)
    assert fold_of(rows, 3, seed=0) != fold_of(rows, 3, seed=1)


def test_bad_fold_requests_are_one_line_errors() -> None:
    with pytest.raises(DataError, match="between 0 and 2"):
        fold_split(_rows(), 3, 3)
    with pytest.raises(DataError, match="at least 2"):
        fold_of(_rows(), 1)
    with pytest.raises(DataError, match="of each label"):
        fold_of(_rows(8), 5)
