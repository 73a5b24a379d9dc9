"""What every source reader shares: the index of files under SOURCE by id, labels as
:class:`Entry`, splits from file and folder names, and CSV reading.

Files are indexed by name anywhere under SOURCE, never by folder name: ``<id>.<image suffix>`` is
an image, ``<id>_segmentation.png`` (any case: ISIC 2016 writes ``_Segmentation``) a lesion mask,
``<id>_superpixels.png`` an ISIC 2017 Part 2 superpixel map and ``<id>_features.json`` its
dermoscopic features.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from attnmel_cli.data.decode import IMAGE_SUFFIXES
from attnmel_cli.data.manifest import Problems
from attnmel_cli.errors import DataError
from attnmel_cli.io.safe_text import has_unsafe, printable

log = logging.getLogger("attnmel")

SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_MASK_RE = re.compile(r"(.+)_(segmentation|superpixels)\.png", re.IGNORECASE)
_FEATURES_RE = re.compile(r"(.+)_features\.json", re.IGNORECASE)

CsvRows = list[tuple[int, list[str]]]  # (line number, cells), blank lines dropped


@dataclass(frozen=True)
class Entry:
    """One label from the source; ``split`` is None where the source does not give one;
    ``weight`` is the ground truth's ``score_weight`` (0: the ISIC scorer leaves it out)."""

    image_id: str
    label: int
    diagnosis: str
    split: str | None
    origin: str  # where the label came from, for messages: "file.csv:12" or "class folder/"
    weight: int = 1
    attributes: dict[str, str] = field(default_factory=dict, compare=False)  # manifest extras


@dataclass
class FileIndex:
    """Files under SOURCE by id (a list each, so that duplicates can be reported)."""

    images: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    lesion_masks: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    superpixels: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    features: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    csvs: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """A source folder read: its layout, label files, labels and files."""

    root: Path
    layout: str
    label_files: list[Path]
    entries: list[Entry]
    files: FileIndex


def image_id_of(name: str) -> str:
    """The id of an image named in a label file or on disk: its base name less any image suffix."""
    base = re.split(r"[\\/]", name.strip())[-1]
    stem, dot, suffix = base.rpartition(".")
    return stem if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES else base


def _unusable(path: Path) -> bool:
    """Whether a name found on disk cannot go into a manifest: control characters (a CR or LF
    would break its line), or bytes that are not UTF-8; said in one line, then skipped."""
    if not has_unsafe(path.name):
        return False
    log.warning("skipped %s: its name holds control characters or bytes that are not UTF-8 "
                "(rename it to use it)", printable(path))
    return True


def index_files(root: Path, exclude: Path | None = None) -> FileIndex:
    """Index images, masks, superpixels, feature JSONs and CSVs under ``root`` (hidden and
    ``exclude`` folders skipped, and names that cannot go into a manifest: :func:`_unusable`)."""
    index = FileIndex()
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d != exclude
                         and not _unusable(here / d))
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or _unusable(path):
                continue
            if m := _MASK_RE.fullmatch(name):
                kind = index.lesion_masks if m[2].lower() == "segmentation" else index.superpixels
                kind[m[1]].append(path)
            elif m := _FEATURES_RE.fullmatch(name):
                index.features[m[1]].append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                index.images[image_id_of(name)].append(path)
            elif path.suffix.lower() == ".csv":
                index.csvs.append(path)
    return index


def split_of(path: Path, root: Path) -> str | None:
    """The split a file's name (else its folders' names, innermost first) says, if any."""
    for part in reversed(path.relative_to(root).with_suffix("").parts):
        for word in re.split(r"[^a-z]+", part.lower()):
            if word in SPLIT_WORDS:
                return SPLIT_WORDS[word]
    return None


def read_csv(path: Path) -> CsvRows:
    """All non-blank rows of a CSV (UTF-8, optional BOM, any line ending) with line numbers."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            return [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None


def first_row(path: Path) -> list[str]:
    """The first row of a CSV, or [] if it cannot be read as one."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def binary(value: str) -> int | None:
    """0 or 1 from '0', '1', '0.0', '1.0'; None for anything else."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def bad_label(problems: Problems, image_id: str, where: str, cells: list[str]) -> None:
    problems.add("bad label", f"{image_id or '(empty id)'} ({where}: {','.join(cells[1:])!r})")


def record(header: list[str], cells: list[str]) -> dict[str, str]:
    """A row as {lower-case column name: stripped value}; short rows lack the last columns."""
    names = [name.strip().lower() for name in header]
    return dict(zip(names, (c.strip() for c in cells), strict=False))
