"""Readers of source layouts: the official ISIC downloads and generic labelled folders or CSVs.

Files are indexed by name anywhere under SOURCE, never by folder name: ``<id>.<image suffix>`` is
an image, ``<id>_segmentation.png`` (any case: ISIC 2016 writes ``_Segmentation``) a lesion mask,
``<id>_superpixels.png`` an ISIC 2017 Part 2 superpixel map and ``<id>_features.json`` its
dermoscopic features. Label files are recognised by their header; the split of each label comes
from its file or folder name (Training → train, Validation → val, Test → test).
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from attnmel_cli.errors import DataError
from attnmel_cli.manifest import Problems

LAYOUTS = ("isic2016", "isic2017", "isic2018", "isic2019", "isic2020", "folder", "csv")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
DERMO_FEATURES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst")
MELANOMA_NAMES = frozenset({"melanoma", "mel", "malignant"})  # class folders labelled 1
_ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
_ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
_SPLIT_WORDS = {
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
_ISIC_ID_RE = re.compile(r"ISIC_\d+", re.IGNORECASE)

CsvRows = list[tuple[int, list[str]]]  # (line number, cells), blank lines dropped


@dataclass(frozen=True)
class Entry:
    """One label from the source; ``split`` is None where the source does not give one."""

    image_id: str
    label: int
    diagnosis: str
    split: str | None
    origin: str  # where the label came from, for messages: "file.csv:12" or "class folder/"


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


def index_files(root: Path, exclude: Path | None = None) -> FileIndex:
    """Index images, masks, superpixels, feature JSONs and CSVs under ``root`` (hidden and
    ``exclude`` folders skipped)."""
    index = FileIndex()
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d != exclude)
        for name in sorted(names):
            path = here / name
            if name.startswith("."):
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
            if word in _SPLIT_WORDS:
                return _SPLIT_WORDS[word]
    return None


def classify_header(cells: list[str]) -> str | None:
    """The layout whose label file starts with the row ``cells``, or None for other CSVs."""
    low = [c.strip().lower() for c in cells]
    if low[:3] == ["image_id", "melanoma", "seborrheic_keratosis"]:
        return "isic2017"
    if low[:1] == ["image"] and low[1:8] == [c.lower() for c in _ISIC2018_CLASSES]:
        return "isic2018"
    if low[:1] == ["image"] and low[1:10] == [c.lower() for c in _ISIC2019_CLASSES]:
        return "isic2019"
    if "image_name" in low and "target" in low:
        return "isic2020"
    if len(low) == 2 and _ISIC_ID_RE.fullmatch(low[0].upper()):
        return "isic2016"
    if "image" in low and "label" in low:
        return "csv"
    return None


def read_csv(path: Path) -> CsvRows:
    """All non-blank rows of a CSV (UTF-8, optional BOM, any line ending) with line numbers."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            return [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None


def _first_row(path: Path) -> list[str]:
    """The first row of a CSV, or [] if it cannot be read as one."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _binary(value: str) -> int | None:
    """0 or 1 from '0', '1', '0.0', '1.0'; None for anything else."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def _bad(problems: Problems, image_id: str, where: str, cells: list[str]) -> None:
    problems.add("bad label", f"{image_id or '(empty id)'} ({where}: {','.join(cells[1:])!r})")


def _read_isic2016(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
    """ISIC 2016 Part 3: no header; ``id,benign|malignant`` (training) or ``id,0.0|1.0`` (test)."""
    entries = []
    for line, cells in rows:
        where = f"{path.name}:{line}"
        image_id = cells[0].strip()
        value = cells[1].strip().lower() if len(cells) == 2 else ""
        label = {"benign": 0, "malignant": 1}.get(value, _binary(value))
        if not image_id or label is None:
            _bad(problems, image_id, where, cells)
            continue
        entries.append(Entry(image_id, label, "melanoma" if label else "benign", split, where))
    return entries


def _read_isic2017(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
    """ISIC 2017 Part 3: ``image_id,melanoma,seborrheic_keratosis`` (0.0/1.0, at most one 1)."""
    entries = []
    for line, cells in rows[1:]:
        where = f"{path.name}:{line}"
        image_id = cells[0].strip()
        values = [_binary(c) for c in cells[1:3]]
        if not image_id or len(values) < 2 or None in values or sum(values) > 1:
            _bad(problems, image_id, where, cells)
            continue
        mel, sk = values
        diagnosis = "melanoma" if mel else "seborrheic_keratosis" if sk else "nevus"
        entries.append(Entry(image_id, mel, diagnosis, split, where))
    return entries


def _one_hot_reader(classes: tuple[str, ...]) -> Callable[..., list[Entry]]:
    """A reader of ISIC 2018 Task 3 / 2019 one-hot CSVs: ``image,MEL,…`` with exactly one 1."""

    def read(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
        entries = []
        for line, cells in rows[1:]:
            where = f"{path.name}:{line}"
            image_id = cells[0].strip()
            values = [_binary(c) for c in cells[1 : len(classes) + 1]]
            if not image_id or len(values) < len(classes) or None in values or sum(values) != 1:
                _bad(problems, image_id, where, cells)
                continue
            hot = classes[values.index(1)]
            entries.append(Entry(image_id, int(hot == "MEL"), hot, split, where))
        return entries

    return read


def _record(header: list[str], cells: list[str]) -> dict[str, str]:
    """A row as {lower-case column name: stripped value}; short rows lack the last columns."""
    names = [name.strip().lower() for name in header]
    return dict(zip(names, (c.strip() for c in cells), strict=False))


def _read_isic2020(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
    """ISIC 2020 ``train.csv``: ``image_name,…,diagnosis,benign_malignant,target``."""
    entries = []
    for line, cells in rows[1:]:
        where = f"{path.name}:{line}"
        cell = _record(rows[0][1], cells)
        image_id, label = cell.get("image_name", ""), _binary(cell.get("target", ""))
        benign_malignant = cell.get("benign_malignant", "").lower()
        if (
            not image_id
            or label is None
            or benign_malignant not in ("", ("benign", "malignant")[label])
        ):
            problems.add(
                "bad label",
                f"{image_id or '(empty id)'} ({where}: target "
                f"{cell.get('target')!r}, benign_malignant {benign_malignant!r})",
            )
            continue
        entries.append(Entry(image_id, label, cell.get("diagnosis", ""), split, where))
    return entries


def _read_generic_csv(
    path: Path, rows: CsvRows, split: str | None, problems: Problems
) -> list[Entry]:
    """A user's CSV: ``image,label`` (0/1) with optional ``split`` and ``diagnosis`` columns;
    ``image`` is a file name or path (its base name is the id)."""
    entries = []
    for line, cells in rows[1:]:
        where = f"{path.name}:{line}"
        cell = _record(rows[0][1], cells)
        image_id, label = image_id_of(cell.get("image", "")), _binary(cell.get("label", ""))
        if not image_id or label is None:
            problems.add(
                "bad label", f"{image_id or '(empty id)'} ({where}: {cell.get('label')!r})"
            )
            continue
        row_split = split
        if cell.get("split"):
            row_split = _SPLIT_WORDS.get(cell["split"].lower())
            if row_split is None:
                problems.add("bad split", f"{image_id} ({where}: {cell['split']!r})")
                continue
        diagnosis = cell.get("diagnosis") or ("melanoma" if label else "other")
        entries.append(Entry(image_id, label, diagnosis, row_split, where))
    return entries


def _read_folders(root: Path, files: FileIndex, problems: Problems) -> list[Entry]:
    """One folder per class (``melanoma``/``mel``/``malignant`` → 1, any other name → 0),
    optionally inside ``train``/``val``/``test`` folders."""
    entries = []
    for image_id, paths in files.images.items():
        parts = paths[0].relative_to(root).parts[:-1]
        split = _SPLIT_WORDS.get(parts[0].lower()) if parts else None
        if split:
            parts = parts[1:]
        if not parts:
            problems.add("image not in a class folder", str(paths[0].relative_to(root)))
            continue
        label = int(parts[0].lower() in MELANOMA_NAMES)
        entries.append(Entry(image_id, label, parts[0], split, f"{parts[0]}/"))
    if entries and not any(e.label for e in entries):
        classes = sorted({e.diagnosis for e in entries})
        raise DataError(
            f"{root}: no melanoma class folder among {', '.join(classes)}; name the "
            f"melanoma folder one of {', '.join(sorted(MELANOMA_NAMES))}"
        )
    return entries


_CSV_READERS = {
    "isic2016": _read_isic2016,
    "isic2017": _read_isic2017,
    "isic2018": _one_hot_reader(_ISIC2018_CLASSES),
    "isic2019": _one_hot_reader(_ISIC2019_CLASSES),
    "isic2020": _read_isic2020,
    "csv": _read_generic_csv,
}


def detect_layout(root: Path, csvs: list[Path], dataset: str = "auto") -> tuple[str, list[Path]]:
    """The layout of SOURCE and its label files: the one kind of label file found, else class
    folders; ``dataset`` forces a layout."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in csvs:
        kind = classify_header(_first_row(path))
        if kind:
            found[kind].append(path)
    listing = "; ".join(
        f"{k}: {', '.join(str(p.relative_to(root)) for p in v)}" for k, v in sorted(found.items())
    )
    if dataset == "auto":
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
        f"{p.relative_to(root)} (columns {', '.join(_first_row(p)[:6]) or 'none'})"
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
            entries = _read_folders(root, files, problems)
        except DataError as exc:
            raise DataError(f"{exc}{hint}") from None
        if hint and (len(problems) or not entries):
            problems.add("not a label file", hint.removeprefix("; "))
    else:
        entries = []
        for path in label_files:
            rows = read_csv(path)
            entries += _CSV_READERS[layout](path, rows, split_of(path, root), problems)
    if not entries and not len(problems):
        raise DataError(
            f"{root}: no labelled images found (expected an ISIC download, class "
            "folders, or a CSV with image,label columns)"
        )
    return Source(root, layout, label_files, entries, files)
