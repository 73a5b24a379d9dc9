"""``attnmel prepare``: check a source dataset, then write the prepared dir (paper §3.1).

1. **Check** (nothing written): read the labels, index the files, then verify that every label has
   an image and every image in a labelled folder a label, that no id is duplicated, that labels are
   valid, that every image header reads and that its masks, superpixel maps and feature JSONs fit
   it. All problems are reported together, listing the offending ids.
2. **Write**: decode each photo once (in parallel), crop and resize it as the paper does and store
   it as a lossless PNG (256×256 RGB, no second JPEG generation); lesion and dermo maps get the same
   crop with nearest-neighbour resampling, stored as 0/255 PNGs. ``manifest.csv`` and
   ``prepare.json`` are written last: a dir without ``manifest.csv`` is incomplete.

Each output PNG carries a digest of its inputs (source files + recipe), so a re-run skips what is
already done, after an interruption too. A photo that passes the header check but fails to decode
aborts the run before ``manifest.csv`` is written, naming every such file; finished files are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attnmel_cli import __version__
from attnmel_cli.config import (
    CROP_FRACTION,
    PREPARE_SEED,
    PREPARE_VAL_FRACTION,
    PREPARED_SIZE,
)
from attnmel_cli.data.checks import Job, assign_splits, inspect_job, match_files, rel_path
from attnmel_cli.data.decode import DEFAULT_MAX_PIXELS
from attnmel_cli.data.manifest import MANIFEST_NAME, SPLITS, Problems, Row, write_manifest
from attnmel_cli.data.sources import Source, read_source
from attnmel_cli.data.writer import Done, process_job, recipe
from attnmel_cli.errors import DataError
from attnmel_cli.io.atomic import ensure_dir, refuse_unless_forced, write_text_atomic
from attnmel_cli.io.safe_text import printable
from attnmel_cli.parallel import parallel_map, prepare_workers

META_NAME = "prepare.json"
META_FORMAT = "attnmel-prepared"

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class SplitCount:
    images: int = 0
    melanoma: int = 0
    lesion_masks: int = 0
    dermo_maps: int = 0


@dataclass
class PrepareResult:
    """Summary of a prepare run, for the CLI to render."""

    out: Path
    layout: str
    counts: dict[str, SplitCount]
    written: int
    skipped: int
    carved_val: bool
    ignored: dict[str, int] = field(default_factory=dict)  # unlabelled folder → image count
    seconds: float = 0.0
    resolution: CropSides | None = None
    lesions: int = 0  # distinct lesion ids (0: the source names none)


@dataclass(frozen=True)
class CropSides:
    """The side in source pixels of the photos' centre crops, against the prepared 256."""

    median: int
    smallest: int
    upsampled: int  # photos whose crop is smaller than the prepared size (upsampled)
    photos: int

    def note(self, crop_fraction: float) -> str | None:
        """A sentence for the summary when most crops are upsampled, else None."""
        if 2 * self.upsampled <= self.photos:
            return None
        return (f"{self.upsampled} of {self.photos} photos are smaller than the prepared "
                f"{PREPARED_SIZE} px: their {crop_fraction:g} crop is {self.median} px "
                f"(median; smallest {self.smallest}), upsampled to {PREPARED_SIZE}; the source's "
                "resolution, not the prepared size, limits their detail")


def crop_sides(jobs: Sequence[Job], crop_fraction: float) -> CropSides | None:
    """:class:`CropSides` of the inspected ``jobs`` (None without any)."""
    sides = sorted(round(crop_fraction * min(j.size)) for j in jobs if min(j.size) > 0)
    if not sides:
        return None
    return CropSides(sides[len(sides) // 2], sides[0],
                     sum(side < PREPARED_SIZE for side in sides), len(sides))


def _read_meta(out: Path) -> dict[str, object] | None:
    try:
        meta = json.loads((out / META_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None


def _claim_out(out: Path, root: Path, layout: str, force: bool) -> None:
    """Refuse an --out that holds something other than a prepared copy of this same source."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    above = next((p for p in out.parents if p.exists()), None)  # nothing is created yet
    if above is not None and not above.is_dir():
        raise DataError(f"{out}: cannot create this output folder (Not a directory: {above})")
    if out == root:
        raise DataError(f"{out}: --out must differ from SOURCE")
    if not out.exists() or not any(out.iterdir()):
        return
    meta = _read_meta(out)
    if meta and meta.get("source") == str(root) and meta.get("layout") == layout:
        return
    what = (
        f"holds a dataset prepared from {meta.get('source')} ({meta.get('layout')})"
        if meta
        else "is not empty and not an attnmel prepared dir"
    )
    refuse_unless_forced(out, force=force, what=what, error=DataError,
                         hint=f"pass --force to prepare {root} ({layout}) into it anyway")


def _meta(
    src: Source,
    val_fraction: float,
    seed: int,
    carved: bool,
    counts: dict[str, SplitCount] | None,
    ignored: dict[str, int],
    crop_fraction: float,
    resolution: CropSides | None = None,
) -> str:
    meta = {
        "format": META_FORMAT,
        "format_version": 1,
        "attnmel_version": __version__,
        "complete": counts is not None,
        "source": str(src.root),
        "layout": src.layout,
        "label_files": [rel_path(p, src.root) for p in src.label_files],
        "val_fraction": val_fraction,
        "seed": seed,
        "carved_val": carved,
        "crop_fraction": crop_fraction,
        "recipe": recipe(crop_fraction),
        "image_format": "png",
        "counts": {k: vars(v) for k, v in (counts or {}).items()},
        "ignored_unlabelled_folders": ignored,
        "crop_sides": vars(resolution) if resolution else None,
    }
    return json.dumps(meta, indent=2) + "\n"


def prepared_crop_fraction(root: Path) -> float:
    """The centre-crop fraction the prepared dir ``root`` was written with: ``prepare.json``'s
    ``crop_fraction``, the paper's 0.8 where the dir predates it (or has no readable
    ``prepare.json``); a DataError naming the file when the value is not in (0, 1]."""
    path = root / META_NAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return CROP_FRACTION
    value = meta.get("crop_fraction", CROP_FRACTION) if isinstance(meta, dict) else CROP_FRACTION
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise DataError(f"{path}: crop_fraction {value!r} is not a number in (0, 1]; "
                        "re-run `attnmel prepare`")
    return float(value)


def _resolved(path: Path, what: str) -> Path:
    """``path`` with every symlink followed; a symlink loop is a one-line error."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # "Symlink loop" (RuntimeError before Python 3.13)
        raise DataError(f"{printable(path)}: {what} cannot be resolved (a symlink loop?): "
                        f"{printable(exc)}") from None


def _count(rows: Iterable[Row]) -> dict[str, SplitCount]:
    counts = {split: SplitCount() for split in SPLITS}
    for row in rows:
        c = counts[row.split]
        c.images += 1
        c.melanoma += row.label
        c.lesion_masks += row.lesion_mask is not None
        c.dermo_maps += row.dermo_mask is not None
    return {k: v for k, v in counts.items() if v.images}


def _phase(progress: ProgressFn | None, phase: str, total: int) -> Callable[[int], None] | None:
    """``progress`` of one phase, for :func:`attnmel_cli.parallel.parallel_map` (threads:
    Pillow, zlib and hashlib release the GIL)."""
    return None if progress is None else lambda done: progress(phase, done, total)


def _inspect_all(
    jobs: Sequence[Job], root: Path, workers: int, max_pixels: int, problems: Problems,
    progress: ProgressFn | None,
) -> list[Job]:
    """Header checks of every job (in parallel); raise listing every problem found so far."""
    inspected = list(parallel_map(lambda j: inspect_job(j, root, max_pixels), jobs, workers,
                                  _phase(progress, "checking", len(jobs))))
    for _, found in inspected:
        for kind, item in found:
            problems.add(kind, item)
    problems.raise_if_any("; nothing written")
    return [job for job, _ in inspected]


def _write_all(
    jobs: Sequence[Job], root: Path, out: Path, workers: int, max_pixels: int,
    crop_fraction: float, progress: ProgressFn | None,
) -> list[Done]:
    """Write every job (in parallel); raise naming every photo that did not decode."""
    done = list(parallel_map(lambda j: process_job(j, root, out, max_pixels, crop_fraction),
                             jobs, workers, _phase(progress, "preparing", len(jobs))))
    failed = Problems(str(root))
    for d in done:
        if d.error:
            failed.add("cannot decode", d.error)
    failed.raise_if_any(
        "; manifest not written (finished images are kept; fix or remove the files and re-run)"
    )
    return done


def prepare_dataset(
    source: str | Path,
    out: str | Path,
    *,
    dataset: str = "auto",
    val_fraction: float = PREPARE_VAL_FRACTION,
    seed: int = PREPARE_SEED,
    workers: int | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    crop_fraction: float = CROP_FRACTION,
) -> PrepareResult:
    """Check SOURCE completely, then write (or update) the prepared dir ``out``: each photo's
    square centre crop of side ``crop_fraction``·min(H, W) (the paper: 0.8), resized to 256."""
    start = time.perf_counter()
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not 0 < crop_fraction <= 1:
        raise DataError(f"--crop-fraction must be in (0, 1], got {crop_fraction}")
    if workers is not None and workers < 0:
        raise DataError(f"--workers must be at least 0, got {workers}")
    workers = prepare_workers(workers)
    root, out = _resolved(Path(source), "SOURCE"), _resolved(Path(out), "--out")
    problems = Problems(str(root))
    src = read_source(root, problems, dataset, exclude=out)
    _claim_out(out, root, src.layout, force)
    jobs, ignored = match_files(src, problems)
    problems.raise_if_any("; nothing written")
    jobs = _inspect_all(jobs, root, workers, max_pixels, problems, progress)
    jobs, carved = assign_splits(jobs, val_fraction, seed)

    ensure_dir(out)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # the dir is incomplete until the end
    write_text_atomic(out / META_NAME, _meta(src, val_fraction, seed, carved, None, ignored,
                                             crop_fraction))
    done = _write_all(jobs, root, out, workers, max_pixels, crop_fraction, progress)
    order = {s: i for i, s in enumerate(SPLITS)}
    rows = sorted((d.row for d in done if d.row), key=lambda r: (order[r.split], r.image_id))
    counts = _count(rows)
    write_manifest(out, rows)
    resolution = crop_sides(jobs, crop_fraction)
    write_text_atomic(out / META_NAME, _meta(src, val_fraction, seed, carved, counts, ignored,
                                             crop_fraction, resolution))
    skipped = sum(d.skipped for d in done)
    return PrepareResult(
        out, src.layout, counts, len(done) - skipped, skipped, carved, ignored,
        time.perf_counter() - start, resolution, len({r.lesion_id for r in rows} - {None}),
    )
