"""Readers of the official ISIC label files (2016 Part 3, 2017 Part 3, 2018 Task 3, 2019, 2020)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attnmel_cli.data.manifest import Problems
from attnmel_cli.data.sources.files import CsvRows, Entry, bad_label, binary, record

ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")


def read_isic2016(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
    """ISIC 2016 Part 3: no header; ``id,benign|malignant`` (training) or ``id,0.0|1.0`` (test)."""
    entries = []
    for line, cells in rows:
        where = f"{path.name}:{line}"
        image_id = cells[0].strip()
        value = cells[1].strip().lower() if len(cells) == 2 else ""
        label = {"benign": 0, "malignant": 1}.get(value, binary(value))
        if not image_id or label is None:
            bad_label(problems, image_id, where, cells)
            continue
        entries.append(Entry(image_id, label, "melanoma" if label else "benign", split, where))
    return entries


def read_isic2017(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
    """ISIC 2017 Part 3: ``image_id,melanoma,seborrheic_keratosis`` (0.0/1.0, at most one 1)."""
    entries = []
    for line, cells in rows[1:]:
        where = f"{path.name}:{line}"
        image_id = cells[0].strip()
        values = [binary(c) for c in cells[1:3]]
        if not image_id or len(values) < 2 or None in values or sum(values) > 1:
            bad_label(problems, image_id, where, cells)
            continue
        mel, sk = values
        diagnosis = "melanoma" if mel else "seborrheic_keratosis" if sk else "nevus"
        entries.append(Entry(image_id, mel, diagnosis, split, where))
    return entries


def one_hot_reader(classes: tuple[str, ...]) -> Callable[..., list[Entry]]:
    """A reader of ISIC 2018 Task 3 / 2019 one-hot CSVs: ``image,MEL,…`` with exactly one 1,
    and an optional ``score_weight`` column (0 or 1: the scorer's ground truth)."""

    def read(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
        entries = []
        for line, cells in rows[1:]:
            where = f"{path.name}:{line}"
            image_id = cells[0].strip()
            values = [binary(c) for c in cells[1 : len(classes) + 1]]
            weight = binary(record(rows[0][1], cells).get("score_weight", "1"))
            if not image_id or len(values) < len(classes) or None in values or sum(values) != 1:
                bad_label(problems, image_id, where, cells)
                continue
            if weight is None:
                problems.add("bad score_weight (0 or 1 expected)", f"{image_id} ({where})")
                continue
            hot = classes[values.index(1)]
            entries.append(Entry(image_id, int(hot == "MEL"), hot, split, where, weight))
        return entries

    return read


def read_isic2020(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
    """ISIC 2020 ``train.csv``: ``image_name,…,diagnosis,benign_malignant,target``."""
    entries = []
    for line, cells in rows[1:]:
        where = f"{path.name}:{line}"
        cell = record(rows[0][1], cells)
        image_id, label = cell.get("image_name", ""), binary(cell.get("target", ""))
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
