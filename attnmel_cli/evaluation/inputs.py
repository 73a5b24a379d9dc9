"""The labelled images ``evaluate`` scores: a prepared dir's split, or a source never prepared
(read and matched as ``prepare`` does)."""

from __future__ import annotations

from pathlib import Path

from attnmel_cli.data.checks import match_files
from attnmel_cli.data.manifest import MANIFEST_NAME, SPLITS, Problems, read_manifest
from attnmel_cli.data.sources import read_source
from attnmel_cli.errors import DataError
from attnmel_cli.evaluation.results import EvalData, Item


def default_split(present: set[str]) -> str:
    """The split ``evaluate`` takes without ``--split``: test when there is one, else val."""
    return "test" if "test" in present or "val" not in present else "val"


def _pick(source: Path, split: str | None, present: set[str]) -> str:
    """``split`` (or the default one), refused when the data does not have it."""
    chosen = split or default_split(present)
    if chosen not in SPLITS:
        raise DataError(f"unknown split {chosen!r}; expected one of {', '.join(SPLITS)}")
    if chosen not in present:
        raise DataError(
            f"{source}: no {chosen!r} images (splits present: {', '.join(sorted(present))})"
        )
    return chosen


def load_data(data: Path, split: str | None, dataset: str = "auto") -> EvalData:
    """The labelled ``split`` images of ``data``, with their lesion masks where there are any
    (``split`` None: :func:`default_split`).

    ``data`` is a prepared dir (``manifest.csv``) or a source never prepared: an ISIC download or
    a generic layout (class folders, or a CSV of image,label), read and matched as ``prepare``
    does. A photo-sized lesion mask must cover the photo's pixel grid.
    A source whose labels name no split at all is evaluated whole. Images whose ground truth
    has a ``score_weight`` of 0 (ISIC 2019-style label files) are left out, as the ISIC scorer
    leaves them out, and counted in ``score_weight_zero``.
    """
    if (data / MANIFEST_NAME).is_file():
        rows = read_manifest(data)
        split = _pick(data / MANIFEST_NAME, split, {r.split for r in rows})
        items = [
            Item(
                r.image_id, data / r.image, r.label,
                data / r.lesion_mask if r.lesion_mask else None, r.diagnosis,
            )
            for r in rows
            if r.split == split
        ]
        return EvalData(data, split, items, prepared=True)
    problems = Problems(str(data))
    src = read_source(data, problems, dataset)
    jobs, _ = match_files(src, problems)
    problems.raise_if_any()
    splits = {j.split for j in jobs if j.split}
    if splits:
        split = _pick(data, split, splits)
        jobs = [j for j in jobs if j.split == split]
    unweighted = {e.image_id for e in src.entries if e.weight == 0}
    items = [
        Item(j.image_id, j.image, j.label, j.lesion, j.diagnosis)
        for j in jobs
        if j.image_id not in unweighted
    ]
    return EvalData(
        data, split if splits else None, items, prepared=False,
        score_weight_zero=len(jobs) - len(items),
    )


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
