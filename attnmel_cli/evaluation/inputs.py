"""The labelled images ``evaluate`` scores: a prepared dir's split, or a source never prepared
(read and matched as ``prepare`` does)."""

from __future__ import annotations

from pathlib import Path

from attnmel_cli.data.checks import match_files
from attnmel_cli.data.manifest import MANIFEST_NAME, Problems, read_manifest
from attnmel_cli.data.sources import read_source
from attnmel_cli.errors import DataError
from attnmel_cli.evaluation.results import EvalData, Item


def load_data(data: Path, split: str, dataset: str = "auto") -> EvalData:
    """The labelled ``split`` images of ``data``, with their lesion masks where there are any.

    ``data`` is a prepared dir (``manifest.csv``) or a source never prepared: an ISIC download or
    a generic layout (class folders, or a CSV of image,label), read and matched as ``prepare``
    does. A photo-sized lesion mask must cover the photo's pixel grid.
    A source whose labels name no split at all is evaluated whole.
    """
    if (data / MANIFEST_NAME).is_file():
        rows = read_manifest(data, split)
        if not rows:
            present = sorted({r.split for r in read_manifest(data)})
            raise DataError(
                f"{data / MANIFEST_NAME}: no {split!r} images "
                f"(splits present: {', '.join(present)})"
            )
        items = [
            Item(
                r.image_id, data / r.image, r.label, data / r.lesion_mask if r.lesion_mask else None
            )
            for r in rows
        ]
        return EvalData(data, split, items, prepared=True)
    problems = Problems(str(data))
    jobs, _ = match_files(read_source(data, problems, dataset), problems)
    problems.raise_if_any()
    splits = {j.split for j in jobs if j.split}
    if splits:
        jobs = [j for j in jobs if j.split == split]
        if not jobs:
            raise DataError(
                f"{data}: no {split!r} images (splits present: {', '.join(sorted(splits))})"
            )
    items = [Item(j.image_id, j.image, j.label, j.lesion) for j in jobs]
    return EvalData(data, split if splits else None, items, prepared=False)


def load_val_data(data: Path, dataset: str = "auto") -> EvalData:
    """The validation split on which ``--threshold val`` is chosen."""
    try:
        val = load_data(data, "val", dataset)
    except DataError as exc:
        raise DataError(f"--threshold val: {exc}") from None
    if val.split is None:
        raise DataError(f"--threshold val: {data} has no val split (its labels name no splits)")
    return val


def of_split(data: EvalData) -> str:
    return "" if data.split is None else f" of split {data.split!r}"
