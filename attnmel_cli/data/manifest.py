"""The prepared-dir contract: ``manifest.csv`` rows, read with every check and written atomically.

A prepared dir holds ``manifest.csv`` with the columns :data:`MANIFEST_COLUMNS`; paths are relative
to the dir and empty where absent, ``label`` is 1 for melanoma and 0 otherwise, ``split`` is one of
:data:`SPLITS`. Images are 256×256 after the paper's crop; masks are aligned with them.
Sources with per-image metadata (HAM10000) add the optional columns :data:`ATTRIBUTE_COLUMNS`
after those: ``lesion_id`` groups the photographs of one lesion (every split and fold keeps a
lesion on one side), the rest are kept for breaking results down.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from attnmel_cli.config import CROP_FRACTION
from attnmel_cli.errors import DataError
from attnmel_cli.io.atomic import write_text_atomic
from attnmel_cli.io.safe_text import csv_cell, csv_value, printable

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "image_id",
    "split",
    "label",
    "diagnosis",
    "image",
    "lesion_mask",
    "dermo_mask",
    "source",
    "sha256",
)
# optional, after MANIFEST_COLUMNS, written when any row has them (HAM10000's metadata)
ATTRIBUTE_COLUMNS = ("lesion_id", "dx", "dx_type", "age", "sex", "localization")
SPLITS = ("train", "val", "test")
_PATH_COLUMNS = ("image", "lesion_mask", "dermo_mask")
_SHOWN = 10  # offending items listed per kind of problem


@dataclass(frozen=True)
class Row:
    """One prepared image. Paths are relative to the prepared dir; masks are ``None`` if absent."""

    image_id: str
    split: str
    label: int
    diagnosis: str
    image: str
    lesion_mask: str | None
    dermo_mask: str | None
    source: str
    sha256: str
    attributes: dict[str, str] = field(default_factory=dict, compare=False)  # ATTRIBUTE_COLUMNS

    @property
    def lesion_id(self) -> str | None:
        """The lesion this photograph shows, where the source says (HAM10000), else None."""
        return self.attributes.get("lesion_id") or None


def group_of(row: Row) -> str:
    """What must stay on one side of any split: the row's lesion, else the image itself."""
    return row.lesion_id or f"image:{row.image_id}"


class Problems:
    """Failed checks grouped by kind, raised together as one :class:`DataError`."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._items: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, item: str) -> None:
        """Record that ``item`` (an id, with where it came from) failed the check ``kind``."""
        self._items[kind].append(item)

    def __len__(self) -> int:
        return sum(len(items) for items in self._items.values())

    def raise_if_any(self, note: str = "") -> None:
        """Raise one DataError listing the first items of each kind and how many there are."""
        if not self._items:
            return
        lines = [f"{self.subject}: {len(self)} problem{'s' if len(self) > 1 else ''}{note}"]
        for kind, items in self._items.items():
            more = f", … ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            shown = ", ".join(map(printable, items[:_SHOWN]))  # names: one line each
            lines.append(f"  {kind} ({len(items)}): {shown}{more}")
        error = DataError("\n".join(lines))
        error.multiline = True  # type: ignore[attr-defined]  # its line breaks are its own
        raise error


def _relative(value: str) -> bool:
    """Whether ``value`` is a path inside the prepared dir (relative, no '..')."""
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts and not value.startswith("\\")


def _reader(root: Path, path: Path) -> csv.DictReader:
    """The rows of ``path`` once the dir, the file and every column are there."""
    if not root.is_dir():
        raise DataError(f"{root}: no such prepared dir; create one with `attnmel prepare`")
    if not path.is_file():
        raise DataError(
            f"{path}: missing; {root} is not a complete prepared dir "
            "(run `attnmel prepare` into it)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        )
    return reader


def _field_problems(rec: dict[str, str], where: str, root: Path) -> list[tuple[str, str]]:
    """(kind, item) for each bad split, label or path of one record (its id is checked apart)."""
    found = []
    if rec["split"] not in SPLITS:
        found.append((f"split not in {'/'.join(SPLITS)}", f"{where} {rec['split']!r}"))
    if rec["label"] not in ("0", "1"):
        found.append(("label not 0/1", f"{where} {rec['label']!r}"))
    if not rec["image"]:
        found.append(("empty image path", where))
    for column in _PATH_COLUMNS:
        value = rec[column]
        if not value:
            continue
        if not _relative(value):
            found.append((f"{column} path outside the dir", f"{where} {value!r}"))
        elif not (root / value).is_file():
            found.append((f"{column} file missing", f"{where} {value}"))
    return found


def _row(image_id: str, rec: dict[str, str]) -> Row:
    return Row(
        image_id=image_id,
        split=rec["split"],
        label=int(rec["label"]),
        diagnosis=rec["diagnosis"],
        image=rec["image"],
        lesion_mask=rec["lesion_mask"] or None,
        dermo_mask=rec["dermo_mask"] or None,
        source=rec["source"],
        sha256=rec["sha256"],
        attributes={c: rec[c] for c in ATTRIBUTE_COLUMNS if rec.get(c)},
    )


def read_manifest(prepared_dir: str | Path, split: str | None = None) -> list[Row]:
    """Read and check ``PREPARED/manifest.csv``; return its rows (only ``split``'s if given).

    Raises :class:`DataError` naming the file, the lines and ids for: a missing dir or manifest,
    missing columns, bad ``split``/``label`` values, empty ids or image paths, paths outside the
    dir, duplicate ids, and referenced files that do not exist.
    """
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(prepared_dir)
    path = root / MANIFEST_NAME
    reader = _reader(root, path)
    problems = Problems(str(path))
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    try:
        for rec in reader:
            line = reader.line_num
            if None in rec or any(rec[c] is None for c in MANIFEST_COLUMNS):
                problems.add("wrong number of fields", f"line {line}")
                continue
            rec = {k: csv_value(v) for k, v in rec.items()}  # the exact values written
            image_id = rec["image_id"].strip()
            where = f"line {line} {image_id or '(empty id)'}"
            ok = True
            if not image_id:
                problems.add("empty image_id", where)
                ok = False
            elif image_id in first_line:
                problems.add(
                    "duplicate image_id", f"{where} (first on line {first_line[image_id]})"
                )
                ok = False
            else:
                first_line[image_id] = line
            found = _field_problems(rec, where, root)
            for kind, item in found:
                problems.add(kind, item)
            if ok and not found and (split is None or rec["split"] == split):
                rows.append(_row(image_id, rec))
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    problems.raise_if_any()
    if not first_line:
        raise DataError(f"{path}: no rows")
    return rows


def write_manifest(prepared_dir: str | Path, rows: list[Row]) -> Path:
    """Write ``rows`` to ``PREPARED/manifest.csv`` atomically (temporary name, then rename);
    the attribute columns any row has follow the required ones. A text cell a spreadsheet would
    run as a formula gets a leading ``'`` (:func:`attnmel_cli.io.safe_text.csv_cell`), which
    :func:`read_manifest` takes off again."""
    extra = [c for c in ATTRIBUTE_COLUMNS if any(c in row.attributes for row in rows)]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*MANIFEST_COLUMNS, *extra])
    for row in rows:
        values = [getattr(row, c) for c in MANIFEST_COLUMNS]
        values += [row.attributes.get(c, "") for c in extra]
        writer.writerow("" if v is None else csv_cell(v) for v in values)
    return write_text_atomic(Path(prepared_dir) / MANIFEST_NAME, buf.getvalue())


def data_fingerprint(rows: Sequence[Row], crop_fraction: float = CROP_FRACTION) -> str:
    """SHA-256 over (image_id, split, label, image sha256) of every manifest row, by id, and the
    prepared crop where it is not the paper's (so that fingerprints before it stay)."""
    h = hashlib.sha256()
    if crop_fraction != CROP_FRACTION:
        h.update(f"crop={crop_fraction}\n".encode())
    for row in sorted(rows, key=lambda r: r.image_id):
        h.update(f"{row.image_id},{row.split},{row.label},{row.sha256}\n".encode())
    return h.hexdigest()
