"""``prepare``'s checks, all before anything is written: pair each label with its files, then
read every header (image size, EXIF orientation, masks and superpixel maps of the same size,
feature JSONs); and the stratified validation split carved from train where there is none,
grouped by lesion where the source names lesions (HAM10000)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from attnmel_cli.data.decode import DECODE_ERRORS, DEFAULT_MAX_PIXELS, ORIENTATION_TRANSPOSE
from attnmel_cli.data.dermo import features_union
from attnmel_cli.data.manifest import Problems
from attnmel_cli.data.sources import Entry, Source
from attnmel_cli.errors import InputError


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
    attributes: dict[str, str] = field(default_factory=dict, compare=False)  # manifest extras
    size: tuple[int, int] = (0, 0)  # the photo's (width, height), once inspected


def rel_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with forward slashes (for messages and the manifest)."""
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
                    f"{image_id} ({', '.join(rel_path(p, root) for p in paths)})",
                )
        extra, _ = _unmatched(index, set(labels))
        for path in extra:
            problems.add(f"{kind} without label", rel_path(path, root))
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
            problems.add("features JSON without superpixel map", rel_path(features, root))
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
                attributes=entry.attributes,
            )
        )
    return jobs, {rel_path(k, root): v for k, v in sorted(ignored.items())}


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def inspect_job(
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
                    f"{job.image_id} ({rel_path(job.image, root)}: {size[0]}×{size[1]} px)",
                )]
            orientation = int(img.getexif().get(0x0112, 1))
    except DECODE_ERRORS as exc:
        return job, [("unreadable image", f"{job.image_id} ({rel_path(job.image, root)}: {exc})")]
    for kind, path in (("lesion mask", job.lesion), ("superpixel map", job.superpixels)):
        if path is None:
            continue
        try:
            other = _size(path)
        except DECODE_ERRORS as exc:
            found.append((f"unreadable {kind}", f"{job.image_id} ({rel_path(path, root)}: {exc})"))
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
            features_union(job.features)
        except InputError as exc:
            found.append(("invalid features JSON", f"{job.image_id} ({exc})"))
    known = orientation in ORIENTATION_TRANSPOSE
    if orientation in (5, 6, 7, 8):  # a quarter turn swaps width and height
        size = (size[1], size[0])
    return replace(job, orientation=orientation if known else 1, size=size), found


def carve_val(jobs: list[Job], fraction: float, seed: int) -> set[str]:
    """Ids of a stratified (per label) random ``fraction`` of the train jobs, fixed by ``seed``.

    Jobs with a ``lesion_id`` are drawn by lesion (a lesion labelled melanoma if any of its
    photographs is): all photographs of a lesion land on the same side. Without lesion ids
    every image is its own group, which is the image-level carve of earlier versions."""
    rng = random.Random(seed)
    members: dict[str, list[str]] = defaultdict(list)
    group_label: dict[str, int] = defaultdict(int)
    for job in jobs:
        if job.split == "train":
            group = job.attributes.get("lesion_id") or job.image_id
            members[group].append(job.image_id)
            group_label[group] = max(group_label[group], job.label)
    by_label: dict[int, list[str]] = defaultdict(list)
    for group, label in group_label.items():
        by_label[label].append(group)
    chosen: set[str] = set()
    for label in sorted(by_label):
        groups = sorted(by_label[label])
        rng.shuffle(groups)
        for group in groups[: round(fraction * len(groups))]:
            chosen.update(members[group])
    return chosen


def assign_splits(jobs: list[Job], fraction: float, seed: int) -> tuple[list[Job], bool]:
    """Unsplit labels go to train; without an official val split, carve one from train."""
    jobs = [job if job.split else replace(job, split="train") for job in jobs]
    if fraction <= 0 or any(job.split == "val" for job in jobs):
        return jobs, False
    val = carve_val(jobs, fraction, seed)
    return [replace(j, split="val") if j.image_id in val else j for j in jobs], bool(val)
