"""``prepare``'s writing step for one image: the paper crop of the photo as a lossless PNG and
its lesion and dermo maps on the same grid (nearest-neighbour, 0/255), each stamped with a digest
of its inputs so that a re-run skips what is already done."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

from attnmel_cli.config import CROP_FRACTION, PREPARED_SIZE
from attnmel_cli.data.checks import Job, rel_path
from attnmel_cli.data.decode import (
    DECODE_ERRORS,
    DEFAULT_MAX_PIXELS,
    ORIENTATION_TRANSPOSE,
    load_photo,
)
from attnmel_cli.data.dermo import dermo_map, open_map
from attnmel_cli.data.manifest import Row
from attnmel_cli.data.transforms import paper_crop, paper_crop_box
from attnmel_cli.errors import InputError
from attnmel_cli.io.atomic import write_atomic
from attnmel_cli.io.digest import file_sha256

_DIGEST_KEY = "attnmel-inputs"


def recipe(crop_fraction: float = CROP_FRACTION) -> str:
    """What a prepared file is made by; part of each file's inputs digest (change → redo all).
    Version 2: photos decoded at full resolution (1 used the draft JPEG decode)."""
    return f"attnmel-prepare/2 crop={crop_fraction} size={PREPARED_SIZE} png"


@dataclass(frozen=True)
class Done:
    """What processing one job gave: its manifest row (or the error), written or skipped."""

    row: Row | None = None
    skipped: bool = False
    error: str | None = None


def _stamp(path: Path) -> str | None:
    """The inputs digest an output PNG was written from, or None."""
    try:
        with Image.open(path) as img:
            return img.info.get(_DIGEST_KEY)
    except DECODE_ERRORS:
        return None


def is_prepared_image(img: Image.Image) -> bool:
    """Whether a decoded image is one ``prepare`` wrote (its paper crop is done already): it
    carries the inputs digest ``prepare`` stamps into every PNG and has the prepared size."""
    return _DIGEST_KEY in img.info and img.size == (PREPARED_SIZE, PREPARED_SIZE)


def _save_png(img: Image.Image, target: Path, digest: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(_DIGEST_KEY, digest)
    write_atomic(target, lambda tmp: img.save(tmp, format="PNG", pnginfo=info, compress_level=1))


def _aligned(
    mask: Image.Image, orientation: int, photo_size: tuple[int, int], crop_fraction: float,
) -> Image.Image:
    """A map on the source photo's pixel grid → the prepared grid (same crop, nearest)."""
    if orientation in ORIENTATION_TRANSPOSE:
        mask = mask.transpose(ORIENTATION_TRANSPOSE[orientation])
    sx, sy = mask.width / photo_size[0], mask.height / photo_size[1]
    left, top, right, bottom = paper_crop_box(*photo_size, crop_fraction)
    box = (left * sx, top * sy, right * sx, bottom * sy)
    return mask.resize((PREPARED_SIZE, PREPARED_SIZE), Image.Resampling.NEAREST, box=box)


def _outputs(image_id: str) -> dict[str, str]:
    return {
        "image": f"images/{image_id}.png",
        "lesion": f"masks/lesion/{image_id}.png",
        "dermo": f"masks/dermo/{image_id}.png",
    }


def process_job(
    job: Job, root: Path, out: Path, max_pixels: int = DEFAULT_MAX_PIXELS,
    crop_fraction: float = CROP_FRACTION,
) -> Done:
    """Write one job's prepared image and maps (the centre crop of side ``crop_fraction``·min(H, W))
    unless they are already there from equal inputs."""
    try:
        sha = file_sha256(job.image)
        digest = hashlib.sha256(
            "\n".join(
                [
                    recipe(crop_fraction),
                    sha,
                    *(
                        file_sha256(p) if p else "-"
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
        source=rel_path(job.image, root),
        sha256=sha,
        attributes=job.attributes,
    )
    if all(_stamp(out / names[k]) == digest for k in wanted):
        return Done(row, skipped=True)
    try:
        photo = load_photo(job.image, max_pixels=max_pixels)  # full decode, as scoring's
        maps = {}
        if job.lesion:
            lesion = _aligned(open_map(job.lesion, "L"), job.orientation, photo.size,
                              crop_fraction)
            maps["lesion"] = lesion.point(lambda v: 255 if v else 0)
        if job.superpixels and job.features:
            maps["dermo"] = _aligned(
                dermo_map(job.superpixels, job.features), job.orientation, photo.size,
                crop_fraction,
            )
    except InputError as exc:
        return Done(error=str(exc))
    _save_png(paper_crop(photo, crop_fraction=crop_fraction), out / names["image"], digest)
    for kind, img in maps.items():
        _save_png(img, out / names[kind], digest)
    return Done(row)
