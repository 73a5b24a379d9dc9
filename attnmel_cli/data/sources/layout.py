"""Reading a source: detect (or force) its layout, then read its labels with that layout's reader.

Label files are recognised by their header; the split of each label comes from its file or
folder name (Training → train, Validation → val, Test → test).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from attnmel_cli.data.manifest import Problems
from attnmel_cli.data.sources.files import Source, first_row, index_files, read_csv, split_of
from attnmel_cli.data.sources.generic import read_folders, read_generic_csv
from attnmel_cli.data.sources.ham10000 import attach_metadata, is_metadata_header, read_ham10000
from attnmel_cli.data.sources.isic import (
    ISIC2018_CLASSES,
    ISIC2019_CLASSES,
    one_hot_reader,
    read_isic2016,
    read_isic2017,
    read_isic2020,
)
from attnmel_cli.errors import DataError

LAYOUTS = ("isic2016", "isic2017", "isic2018", "ham10000", "isic2019", "isic2020", "folder", "csv")
_ISIC_ID_RE = re.compile(r"ISIC_\d+", re.IGNORECASE)


def classify_header(cells: list[str]) -> str | None:
    """The layout whose label file starts with the row ``cells``, or None for other CSVs."""
    low = [c.strip().lower() for c in cells]
    if low[:3] == ["image_id", "melanoma", "seborrheic_keratosis"]:
        return "isic2017"
    if low[:1] == ["image"] and low[1:8] == [c.lower() for c in ISIC2018_CLASSES]:
        return "isic2018"
    if low[:1] == ["image"] and low[1:10] == [c.lower() for c in ISIC2019_CLASSES]:
        return "isic2019"
    if is_metadata_header(low):
        return "ham10000"
    if "image_name" in low and "target" in low:
        return "isic2020"
    if len(low) == 2 and _ISIC_ID_RE.fullmatch(low[0].upper()):
        return "isic2016"
    if "image" in low and "label" in low:
        return "csv"
    return None


_CSV_READERS = {
    "isic2016": read_isic2016,
    "isic2017": read_isic2017,
    "isic2018": one_hot_reader(ISIC2018_CLASSES),
    "isic2019": one_hot_reader(ISIC2019_CLASSES),
    "isic2020": read_isic2020,
    "ham10000": read_ham10000,
    "csv": read_generic_csv,
}


def detect_layout(root: Path, csvs: list[Path], dataset: str = "auto") -> tuple[str, list[Path]]:
    """The layout of SOURCE and its label files: the one kind of label file found, else class
    folders; ``dataset`` forces a layout."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in csvs:
        kind = classify_header(first_row(path))
        if kind:
            found[kind].append(path)
    listing = "; ".join(
        f"{k}: {', '.join(str(p.relative_to(root)) for p in v)}" for k, v in sorted(found.items())
    )
    if dataset == "auto":
        if set(found) == {"isic2018", "ham10000"}:  # the Task 3 labels + HAM10000's metadata
            return "isic2018", found["isic2018"]
        if len(found) > 1:
            raise DataError(
                f"{root}: label files of several layouts ({listing}); choose one with --dataset"
            )
        return next(iter(found.items()), ("folder", []))
    if dataset != "folder" and dataset not in found:
        raise DataError(
            f"{root}: no {dataset} label file found" + (f" (found {listing})" if found else "")
        )
    return dataset, found.get(dataset, [])


def _not_label_files(root: Path, csvs: list[Path]) -> str:
    """'; x.csv (columns …) is not a label file …' for CSVs of no known layout, or ''."""
    if not csvs:
        return ""
    shown = ", ".join(
        f"{p.relative_to(root)} (columns {', '.join(first_row(p)[:6]) or 'none'})"
        for p in csvs[:3]
    )
    return (
        f"; {shown} {'is' if len(csvs) == 1 else 'are'} not a label file: a generic one needs "
        "columns image,label (see --dataset for the ISIC layouts)"
    )


def read_source(
    root: Path, problems: Problems, dataset: str = "auto", exclude: Path | None = None
) -> Source:
    """Index SOURCE, detect (or force) its layout and read its labels; label problems go to
    ``problems`` so that every check can be reported at once."""
    if dataset != "auto" and dataset not in LAYOUTS:
        raise DataError(
            f"unknown dataset {dataset!r}; expected auto or one of {', '.join(LAYOUTS)}"
        )
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    files = index_files(root, exclude)
    layout, label_files = detect_layout(root, files.csvs, dataset)
    if layout == "folder":
        # CSVs were there but none is a label file: say so with whatever goes wrong (wrong columns)
        hint = _not_label_files(root, files.csvs) if dataset == "auto" else ""
        try:
            entries = read_folders(root, files, problems)
        except DataError as exc:
            raise DataError(f"{exc}{hint}") from None
        if hint and (len(problems) or not entries):
            problems.add("not a label file", hint.removeprefix("; "))
    else:
        entries = []
        for path in label_files:
            rows = read_csv(path)
            entries += _CSV_READERS[layout](path, rows, split_of(path, root), problems)
        metadata = [p for p in files.csvs if classify_header(first_row(p)) == "ham10000"]
        if layout == "isic2018" and metadata:
            entries = attach_metadata(entries, metadata, problems)
    if not entries and not len(problems):
        raise DataError(
            f"{root}: no labelled images found (expected an ISIC download, class "
            "folders, or a CSV with image,label columns)"
        )
    return Source(root, layout, label_files, entries, files)
