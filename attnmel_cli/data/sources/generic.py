"""Readers of a user's own labels: an ``image,label`` CSV, or one folder per class."""

from __future__ import annotations

from pathlib import Path

from attnmel_cli.data.manifest import Problems
from attnmel_cli.data.sources.files import (
    SPLIT_WORDS,
    CsvRows,
    Entry,
    FileIndex,
    binary,
    image_id_of,
    record,
)
from attnmel_cli.errors import DataError

MELANOMA_NAMES = frozenset({"melanoma", "mel", "malignant"})  # class folders labelled 1


def read_generic_csv(
    path: Path, rows: CsvRows, split: str | None, problems: Problems
) -> list[Entry]:
    """A user's CSV: ``image,label`` (0/1) with optional ``split`` and ``diagnosis`` columns;
    ``image`` is a file name or path (its base name is the id)."""
    entries = []
    for line, cells in rows[1:]:
        where = f"{path.name}:{line}"
        cell = record(rows[0][1], cells)
        image_id, label = image_id_of(cell.get("image", "")), binary(cell.get("label", ""))
        if not image_id or label is None:
            problems.add(
                "bad label", f"{image_id or '(empty id)'} ({where}: {cell.get('label')!r})"
            )
            continue
        row_split = split
        if cell.get("split"):
            row_split = SPLIT_WORDS.get(cell["split"].lower())
            if row_split is None:
                problems.add("bad split", f"{image_id} ({where}: {cell['split']!r})")
                continue
        diagnosis = cell.get("diagnosis") or ("melanoma" if label else "other")
        entries.append(Entry(image_id, label, diagnosis, row_split, where))
    return entries


def read_folders(root: Path, files: FileIndex, problems: Problems) -> list[Entry]:
    """One folder per class (``melanoma``/``mel``/``malignant`` → 1, any other name → 0),
    optionally inside ``train``/``val``/``test`` folders."""
    entries = []
    for image_id, paths in files.images.items():
        parts = paths[0].relative_to(root).parts[:-1]
        split = SPLIT_WORDS.get(parts[0].lower()) if parts else None
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
