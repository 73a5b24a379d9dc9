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

import hashlib
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, PngImagePlugin
from rich.table import Table

from attnmel_cli import __version__
from attnmel_cli.datasets import DERMO_FEATURES, Entry, Source, read_source
from attnmel_cli.errors import DataError, InputError
from attnmel_cli.fsio import ensure_dir, write_atomic, write_text_atomic
from attnmel_cli.manifest import MANIFEST_NAME, SPLITS, Problems, Row, write_manifest
from attnmel_cli.preprocess import (
    CROP_FRACTION,
    DECODE_ERRORS,
    DEFAULT_MAX_PIXELS,
    PREPARED_SIZE,
    load_photo,
    paper_crop,
    paper_crop_box,
)

META_NAME = "prepare.json"
META_FORMAT = "attnmel-prepared"
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SEED = 0
RECIPE = f"attnmel-prepare/1 crop={CROP_FRACTION} size={PREPARED_SIZE} png"  # change → redo all
_DIGEST_KEY = "attnmel-inputs"
_HEADER_ERRORS = DECODE_ERRORS  # whatever Pillow raises on a broken file
# EXIF orientation → the transpose ImageOps.exif_transpose applies to the photo (masks follow it).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
ORIENTATION_TRANSPOSE = _ORIENTATION  # for evaluate's photo-sized masks

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Job:
    """One labelled image and its source files."""

    image_id: str
    split: str | None
    label: int
    diagnosis: str
    image: Path
    lesion: Path | None
    superpixels: Path | None
    features: Path | None
    orientation: int = 1


@dataclass(frozen=True)
class Done:
    """What processing one job gave: its manifest row (or the error), written or skipped."""

    row: Row | None = None
    skipped: bool = False
    error: str | None = None


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


def default_workers() -> int:
    """min(4, CPU count)."""
    return min(4, os.cpu_count() or 1)


def _parallel(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    phase: str,
    progress: ProgressFn | None,
) -> list[R]:
    """``[fn(x) for x in items]`` on a thread pool (Pillow, zlib and hashlib release the GIL)."""
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(fn, item) for item in items]
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            if progress:
                progress(phase, done, len(items))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return [f.result() for f in futures]


# ── checks ────────────────────────────────────────────────────────────────────────────────────


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _unmatched(
    index: dict[str, list[Path]], labelled: set[str]
) -> tuple[list[Path], dict[Path, int]]:
    """Files whose id has no label: those in folders that also hold labelled files (errors), and
    a count per folder holding no labelled file at all (ignored, e.g. an unlabelled test set)."""
    used = {p.parent for i, ps in index.items() if i in labelled for p in ps}
    extra, ignored = [], Counter[Path]()
    for image_id, paths in index.items():
        if image_id not in labelled:
            for path in paths:
                if path.parent in used:
                    extra.append(path)
                else:
                    ignored[path.parent] += 1
    return extra, dict(ignored)


def match_files(src: Source, problems: Problems) -> tuple[list[Job], dict[str, int]]:
    """Pair each label with its files; report duplicates, labels without images and images
    without labels. Returns the jobs and the ignored unlabelled folders."""
    root, files = src.root, src.files
    labels: dict[str, Entry] = {}
    for entry in src.entries:
        first = labels.setdefault(entry.image_id, entry)
        if first is not entry:
            problems.add(
                "duplicate id in labels", f"{entry.image_id} ({first.origin}, {entry.origin})"
            )
    for kind, index in (
        ("image", files.images),
        ("lesion mask", files.lesion_masks),
        ("superpixel map", files.superpixels),
        ("features JSON", files.features),
    ):
        for image_id, paths in index.items():
            if len(paths) > 1:
                problems.add(
                    f"duplicate {kind} id",
                    f"{image_id} ({', '.join(_rel(p, root) for p in paths)})",
                )
        extra, _ = _unmatched(index, set(labels))
        for path in extra:
            problems.add(f"{kind} without label", _rel(path, root))
    _, ignored = _unmatched(files.images, set(labels))
    jobs = []
    for entry in src.entries:
        if labels[entry.image_id] is not entry:
            continue
        if entry.image_id not in files.images:
            problems.add("label without image", f"{entry.image_id} ({entry.origin})")
            continue
        superpixels = files.superpixels.get(entry.image_id, [None])[0]
        features = files.features.get(entry.image_id, [None])[0]
        if features and not superpixels:
            problems.add("features JSON without superpixel map", _rel(features, root))
        jobs.append(
            Job(
                entry.image_id,
                entry.split,
                entry.label,
                entry.diagnosis,
                files.images[entry.image_id][0],
                files.lesion_masks.get(entry.image_id, [None])[0],
                superpixels if features else None,
                features,
            )
        )
    return jobs, {_rel(k, root): v for k, v in sorted(ignored.items())}


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _features_union(path: Path) -> np.ndarray:
    """The union of the four dermoscopic features per superpixel, from an ISIC 2017 Part 2 JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        lists = [np.asarray(data[key], dtype=np.float64) for key in DERMO_FEATURES]
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
    ) as exc:
        raise InputError(
            f"{path}: not an ISIC 2017 features JSON with lists "
            f"{', '.join(DERMO_FEATURES)} ({type(exc).__name__}: {exc})"
        ) from None
    if any(a.ndim != 1 or len(a) != len(lists[0]) or not np.isin(a, (0, 1)).all() for a in lists):
        raise InputError(f"{path}: features must be lists of 0/1 of equal length")
    return np.logical_or.reduce(lists)


def _inspect(
    job: Job, root: Path, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Job, list[tuple[str, str]]]:
    """Header-level checks of one job's files; returns the job with its EXIF orientation."""
    found: list[tuple[str, str]] = []
    try:
        with Image.open(job.image) as img:
            size = img.size
            if size[0] * size[1] > max_pixels:  # before reading more of the file (EXIF)
                return job, [(
                    f"over the pixel limit of {max_pixels:,} (possible decompression bomb; "
                    "raise it with --max-pixels if the file is genuine)",
                    f"{job.image_id} ({_rel(job.image, root)}: {size[0]}×{size[1]} px)",
                )]
            orientation = int(img.getexif().get(0x0112, 1))
    except _HEADER_ERRORS as exc:
        return job, [("unreadable image", f"{job.image_id} ({_rel(job.image, root)}: {exc})")]
    for kind, path in (("lesion mask", job.lesion), ("superpixel map", job.superpixels)):
        if path is None:
            continue
        try:
            other = _size(path)
        except _HEADER_ERRORS as exc:
            found.append((f"unreadable {kind}", f"{job.image_id} ({_rel(path, root)}: {exc})"))
            continue
        if other != size:
            found.append(
                (
                    f"{kind} size differs from image",
                    f"{job.image_id} ({other[0]}×{other[1]} vs {size[0]}×{size[1]})",
                )
            )
    if job.features:
        try:
            _features_union(job.features)
        except InputError as exc:
            found.append(("invalid features JSON", f"{job.image_id} ({exc})"))
    return replace(job, orientation=orientation if orientation in _ORIENTATION else 1), found


def carve_val(jobs: list[Job], fraction: float, seed: int) -> set[str]:
    """Ids of a stratified (per label) random ``fraction`` of the train jobs, fixed by ``seed``."""
    rng = random.Random(seed)
    by_label: dict[int, list[str]] = defaultdict(list)
    for job in jobs:
        if job.split == "train":
            by_label[job.label].append(job.image_id)
    chosen: set[str] = set()
    for label in sorted(by_label):
        ids = sorted(by_label[label])
        rng.shuffle(ids)
        chosen.update(ids[: round(fraction * len(ids))])
    return chosen


def _assign_splits(jobs: list[Job], fraction: float, seed: int) -> tuple[list[Job], bool]:
    """Unsplit labels go to train; without an official val split, carve one from train."""
    jobs = [job if job.split else replace(job, split="train") for job in jobs]
    if fraction <= 0 or any(job.split == "val" for job in jobs):
        return jobs, False
    val = carve_val(jobs, fraction, seed)
    return [replace(j, split="val") if j.image_id in val else j for j in jobs], bool(val)


# ── writing ───────────────────────────────────────────────────────────────────────────────────


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> str | None:
    """The inputs digest an output PNG was written from, or None."""
    try:
        with Image.open(path) as img:
            return img.info.get(_DIGEST_KEY)
    except _HEADER_ERRORS:
        return None


def _save_png(img: Image.Image, target: Path, digest: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(_DIGEST_KEY, digest)
    write_atomic(target, lambda tmp: img.save(tmp, format="PNG", pnginfo=info, compress_level=1))


def _open_map(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except _HEADER_ERRORS as exc:
        raise InputError(f"{path}: cannot decode ({exc})") from None


def _aligned(mask: Image.Image, orientation: int, photo_size: tuple[int, int]) -> Image.Image:
    """A map on the source photo's pixel grid → the prepared grid (same crop, nearest)."""
    if orientation in _ORIENTATION:
        mask = mask.transpose(_ORIENTATION[orientation])
    sx, sy = mask.width / photo_size[0], mask.height / photo_size[1]
    left, top, right, bottom = paper_crop_box(*photo_size)
    box = (left * sx, top * sy, right * sx, bottom * sy)
    return mask.resize((PREPARED_SIZE, PREPARED_SIZE), Image.Resampling.NEAREST, box=box)


def _superpixel_index(img: Image.Image) -> np.ndarray:
    """ISIC 2017 Part 2 superpixel index: R + (G << 8) + (B << 16)."""
    rgb = np.asarray(img, dtype=np.uint32)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


def dermo_map(superpixels: Path, features: Path) -> Image.Image:
    """The paper's dermo map on the source grid: 255 where any of the four features is marked."""
    union = _features_union(features)
    index = _superpixel_index(_open_map(superpixels, "RGB"))
    if index.max() >= len(union):
        raise InputError(
            f"{superpixels}: superpixel index {int(index.max())} beyond the "
            f"{len(union)} entries of {features.name}"
        )
    return Image.fromarray(np.where(union[index], 255, 0).astype(np.uint8), "L")


def _outputs(image_id: str) -> dict[str, str]:
    return {
        "image": f"images/{image_id}.png",
        "lesion": f"masks/lesion/{image_id}.png",
        "dermo": f"masks/dermo/{image_id}.png",
    }


def _process(job: Job, root: Path, out: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Done:
    """Write one job's prepared image and maps unless they are already there from equal inputs."""
    try:
        sha = _sha256(job.image)
        digest = hashlib.sha256(
            "\n".join(
                [
                    RECIPE,
                    sha,
                    *(
                        _sha256(p) if p else "-"
                        for p in (job.lesion, job.superpixels, job.features)
                    ),
                ]
            ).encode()
        ).hexdigest()
    except OSError as exc:
        return Done(error=f"{job.image}: cannot read ({exc.strerror or exc})")
    names = _outputs(job.image_id)
    wanted = ["image"] + ["lesion"] * bool(job.lesion) + ["dermo"] * bool(job.features)
    row = Row(
        image_id=job.image_id,
        split=job.split or "train",
        label=job.label,
        diagnosis=job.diagnosis,
        image=names["image"],
        lesion_mask=names["lesion"] if job.lesion else None,
        dermo_mask=names["dermo"] if job.features else None,
        source=_rel(job.image, root),
        sha256=sha,
    )
    if all(_stamp(out / names[k]) == digest for k in wanted):
        return Done(row, skipped=True)
    try:
        photo = load_photo(job.image, draft_min_side=PREPARED_SIZE, max_pixels=max_pixels)
        maps = {}
        if job.lesion:
            lesion = _aligned(_open_map(job.lesion, "L"), job.orientation, photo.size)
            maps["lesion"] = lesion.point(lambda v: 255 if v else 0)
        if job.superpixels and job.features:
            maps["dermo"] = _aligned(
                dermo_map(job.superpixels, job.features), job.orientation, photo.size
            )
    except InputError as exc:
        return Done(error=str(exc))
    _save_png(paper_crop(photo), out / names["image"], digest)
    for kind, img in maps.items():
        _save_png(img, out / names[kind], digest)
    return Done(row)


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
    if force or not out.exists() or not any(out.iterdir()):
        return
    meta = _read_meta(out)
    if meta and meta.get("source") == str(root) and meta.get("layout") == layout:
        return
    what = (
        f"holds a dataset prepared from {meta.get('source')} ({meta.get('layout')})"
        if meta
        else "is not empty and not an attnmel prepared dir"
    )
    raise DataError(f"{out}: {what}; pass --force to prepare {root} ({layout}) into it anyway")


def _meta(
    src: Source,
    val_fraction: float,
    seed: int,
    carved: bool,
    counts: dict[str, SplitCount] | None,
    ignored: dict[str, int],
) -> str:
    meta = {
        "format": META_FORMAT,
        "format_version": 1,
        "attnmel_version": __version__,
        "complete": counts is not None,
        "source": str(src.root),
        "layout": src.layout,
        "label_files": [_rel(p, src.root) for p in src.label_files],
        "val_fraction": val_fraction,
        "seed": seed,
        "carved_val": carved,
        "recipe": RECIPE,
        "image_format": "png",
        "counts": {k: vars(v) for k, v in (counts or {}).items()},
        "ignored_unlabelled_folders": ignored,
    }
    return json.dumps(meta, indent=2) + "\n"


def _count(rows: Iterable[Row]) -> dict[str, SplitCount]:
    counts = {split: SplitCount() for split in SPLITS}
    for row in rows:
        c = counts[row.split]
        c.images += 1
        c.melanoma += row.label
        c.lesion_masks += row.lesion_mask is not None
        c.dermo_maps += row.dermo_mask is not None
    return {k: v for k, v in counts.items() if v.images}


def prepare_dataset(
    source: str | Path,
    out: str | Path,
    *,
    dataset: str = "auto",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    workers: int | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PrepareResult:
    """Check SOURCE completely, then write (or update) the prepared dir ``out``."""
    start = time.perf_counter()
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if workers is not None and workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    workers = workers or default_workers()
    root, out = Path(source).resolve(), Path(out).resolve()
    problems = Problems(str(root))
    src = read_source(root, problems, dataset, exclude=out)
    _claim_out(out, root, src.layout, force)
    jobs, ignored = match_files(src, problems)
    problems.raise_if_any("; nothing written")
    inspected = _parallel(
        lambda j: _inspect(j, root, max_pixels), jobs, workers, "checking", progress
    )
    for _, found in inspected:
        for kind, item in found:
            problems.add(kind, item)
    problems.raise_if_any("; nothing written")
    jobs, carved = _assign_splits([job for job, _ in inspected], val_fraction, seed)

    ensure_dir(out)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # the dir is incomplete until the end
    write_text_atomic(out / META_NAME, _meta(src, val_fraction, seed, carved, None, ignored))
    done = _parallel(
        lambda j: _process(j, root, out, max_pixels), jobs, workers, "preparing", progress
    )
    failed = Problems(str(root))
    for d in done:
        if d.error:
            failed.add("cannot decode", d.error)
    failed.raise_if_any(
        "; manifest not written (finished images are kept; fix or remove the files and re-run)"
    )
    order = {s: i for i, s in enumerate(SPLITS)}
    rows = sorted((d.row for d in done if d.row), key=lambda r: (order[r.split], r.image_id))
    counts = _count(rows)
    write_manifest(out, rows)
    write_text_atomic(out / META_NAME, _meta(src, val_fraction, seed, carved, counts, ignored))
    skipped = sum(d.skipped for d in done)
    return PrepareResult(
        out,
        src.layout,
        counts,
        len(done) - skipped,
        skipped,
        carved,
        ignored,
        time.perf_counter() - start,
    )


def summary_table(result: PrepareResult) -> Table:
    """The prepared dir per split, as a Rich table for stderr."""
    table = Table(
        title=f"{result.out} · {result.layout}"
        + (" · val carved from train" if result.carved_val else "")
    )
    for name in ("split", "images", "melanoma", "lesion masks", "dermo maps"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for split, c in result.counts.items():
        table.add_row(split, str(c.images), str(c.melanoma), str(c.lesion_masks), str(c.dermo_maps))
    return table
