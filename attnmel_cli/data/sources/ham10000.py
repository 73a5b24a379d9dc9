"""HAM10000 (Tschandl et al. 2018; the ISIC 2018 Task 3 training set): ``HAM10000_metadata.csv``.

The Dataverse download holds ``HAM10000_images_part_1/``, ``HAM10000_images_part_2/`` (or one
folder), ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,age,sex,localization``) and
``HAM10000_segmentations_lesion_tschandl/``. Several photographs show one lesion (10,015 images,
7,470 lesions): the metadata's ``lesion_id`` goes into the manifest so that every carved split
and every fold keeps a lesion's photographs on one side. The metadata is a label file of its own
(``dx == "mel"`` is melanoma) where no ISIC 2018 Task 3 ground truth is beside it, and the
source of the lesion ids and attributes where one is.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from attnmel_cli.data.manifest import ATTRIBUTE_COLUMNS, Problems
from attnmel_cli.data.sources.files import CsvRows, Entry, read_csv, record

METADATA_HEADER = ("lesion_id", "image_id", "dx")
# ISIC 2018 Task 3 one-hot class ↔ HAM10000 dx
DX_OF_ISIC2018 = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl",
                  "DF": "df", "VASC": "vasc"}


def is_metadata_header(low: list[str]) -> bool:
    """Whether a lower-cased header row is HAM10000's metadata file's."""
    return tuple(low[:3]) == METADATA_HEADER


def _attributes(cell: dict[str, str]) -> dict[str, str]:
    return {c: cell[c] for c in ATTRIBUTE_COLUMNS if cell.get(c)}


def read_ham10000(path: Path, rows: CsvRows, split: str | None, problems: Problems) -> list[Entry]:
    """The metadata file as labels: melanoma where ``dx`` is ``mel``; ``diagnosis`` is ``dx``."""
    entries = []
    for line, cells in rows[1:]:
        cell = record(rows[0][1], cells)
        image_id, dx = cell.get("image_id", ""), cell.get("dx", "").lower()
        if not image_id or dx not in DX_OF_ISIC2018.values():
            problems.add("bad label", f"{image_id or '(empty id)'} ({path.name}:{line}: dx {dx!r})")
            continue
        entries.append(Entry(image_id, int(dx == "mel"), dx, split, f"{path.name}:{line}",
                             attributes=_attributes(cell)))
    return entries


def attach_metadata(entries: list[Entry], files: list[Path], problems: Problems) -> list[Entry]:
    """``entries`` (from the ISIC 2018 ground truth) with each image's metadata attributes; an
    image whose ground-truth class disagrees with its ``dx`` is a problem."""
    meta: dict[str, dict[str, str]] = {}
    for path in files:
        rows = read_csv(path)
        for _, cells in rows[1:]:
            cell = record(rows[0][1], cells)
            meta[cell.get("image_id", "")] = _attributes(cell)
    out = []
    for entry in entries:
        attributes = meta.get(entry.image_id, {})
        dx = DX_OF_ISIC2018.get(entry.diagnosis)
        if attributes.get("dx") and dx and attributes["dx"].lower() != dx:
            problems.add("ground truth disagrees with HAM10000_metadata.csv",
                         f"{entry.image_id} ({entry.origin}: {entry.diagnosis}, metadata dx "
                         f"{attributes['dx']!r})")
        out.append(replace(entry, attributes=attributes))
    return out
