"""Attention maps onto photographs: bilinear upsampling, colour maps, overlays, composites.

A map computed on the network's S×S input covers only the region of the photo the network saw
(:func:`attnmel_cli.data.transforms.network_box`); it is upsampled bilinearly onto that region at
the photo's own resolution. Outside it the photo is dimmed and the region is outlined.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attnmel_cli.data.decode import DEFAULT_MAX_PIXELS, load_photo
from attnmel_cli.data.transforms import network_box
from attnmel_cli.data.writer import is_prepared_image
from attnmel_cli.engine.scored import Scored, ScoringSession
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import atomic_path, ensure_dir, refuse_unless_forced
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.io.records import prediction_caption
from attnmel_cli.viz.legend import add_legend

MAP_LABELS = {"pool3": "pool-3 attention", "pool4": "pool-4 attention", "cam": "CAM (melanoma)"}


def display_map(name: str, values: np.ndarray) -> np.ndarray:
    """Values to show in [0, 1]: attention is a sigmoid already (Eq. 2); a CAM is min–max scaled."""
    values = values.astype(np.float32)
    if name == "cam":
        lo, hi = float(values.min()), float(values.max())
        return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    return np.clip(values, 0.0, 1.0)


def map_on_photo(
    values: np.ndarray, photo_size: tuple[int, int], box: tuple[float, float, float, float]
) -> np.ndarray:
    """Upsample a (h, w) map bilinearly onto ``box`` of a photo of ``photo_size`` = (W, H).

    Returns (H, W) float32 with NaN outside the region the network saw.
    """
    width, height = photo_size
    x0, y0 = round(box[0]), round(box[1])
    side_w, side_h = max(1, round(box[2]) - x0), max(1, round(box[3]) - y0)
    up = cv2.resize(values.astype(np.float32), (side_w, side_h), interpolation=cv2.INTER_LINEAR)
    full = np.full((height, width), np.nan, dtype=np.float32)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + side_w), min(height, y0 + side_h)
    full[fy0:fy1, fx0:fx1] = up[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return full


def colorize(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] (NaN allowed) → (H, W, 3) uint8 RGB with the JET colour map."""
    scaled = np.nan_to_num(values, nan=0.0)
    bgr = cv2.applyColorMap(
        np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET
    )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(
    photo: Image.Image,
    full_map: np.ndarray,
    box: tuple[float, float, float, float],
    alpha: float = 0.45,
) -> Image.Image:
    """Blend the coloured map over the photo inside ``box``; dim outside it; outline the box."""
    rgb = np.asarray(photo, dtype=np.float32)
    inside = ~np.isnan(full_map)
    out = rgb * 0.5  # outside what the network saw
    blended = rgb * (1 - alpha) + colorize(full_map).astype(np.float32) * alpha
    out[inside] = blended[inside]
    img = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
    line = max(1, round(min(photo.size) / 300))
    ImageDraw.Draw(img).rectangle(
        [round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1],
        outline=(255, 255, 255),
        width=line,
    )
    return img


def composite(panels: list[tuple[str, Image.Image]], height: int = 384) -> Image.Image:
    """Panels side by side (photo | pool-3 | pool-4 …), each scaled to ``height``, captioned."""
    scaled = [
        (label,
         img.resize((max(1, round(img.width * height / img.height)), height), Image.BILINEAR))
        for label, img in panels
    ]
    caption = 18
    canvas = Image.new("RGB", (sum(i.width for _, i in scaled), height + caption), "white")
    draw, font, x = ImageDraw.Draw(canvas), ImageFont.load_default(), 0
    for label, img in scaled:
        canvas.paste(img, (x, caption))
        draw.text((x + 4, 3), label, fill=(0, 0, 0), font=font)
        x += img.width
    return canvas


def save_image(img: Image.Image, target: str | Path, *, overwrite: bool = False) -> Path:
    """Save atomically; the format follows ``target``'s extension (PNG when unknown)."""
    target = Path(target)
    fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
    with atomic_path(target, overwrite=overwrite) as tmp:
        img.save(tmp, format=fmt)
    return target


def explanation_images(
    photo: Image.Image, maps: dict[str, np.ndarray], box: tuple[float, float, float, float],
    photo_label: str = "photo", prediction: str | None = None,
) -> tuple[dict[str, Image.Image], Image.Image]:
    """One overlay per map at the photo's resolution, each with its legend (the map's name, its
    colour bar and ``prediction``, the predicted class and probability), and the (photo | map …)
    composite, its photo panel captioned ``photo_label``."""
    overlays = {
        name: overlay(photo, map_on_photo(display_map(name, values), photo.size, box), box)
        for name, values in maps.items()
    }
    panels = [(photo_label, photo)] + [(MAP_LABELS.get(n, n), img) for n, img in overlays.items()]
    overlays = {name: add_legend(img, MAP_LABELS.get(name, name), prediction, colorize)
                for name, img in overlays.items()}
    return overlays, composite(panels)


def overlay_target(path: str, out_dir: Path, taken: set[str], suffix: str = ".png") -> Path:
    """``out_dir/<stem>_attention.png``; a stem seen before gets ``-2``, ``-3``… appended."""
    stem, n = Path(path).stem, 1
    name = f"{stem}_attention{suffix}"
    while name in taken:
        n += 1
        name = f"{stem}-{n}_attention{suffix}"
    taken.add(name)
    return out_dir / name


def write_overlay(
    scored: Scored, meta: CheckpointMeta, map_name: str, target: Path, *,
    threshold: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
) -> Path:
    """Overlay of one map on the photo at the photo's own resolution (EXIF orientation applied),
    with its legend: the map's name, colour bar and the prediction (``threshold`` as predict's)."""
    if map_name not in scored.maps:
        raise AttnMelError(f"this checkpoint ({meta.arch}) has no {map_name} map")
    photo = load_photo(scored.path, max_pixels=max_pixels, warn_frames=False)
    box = network_box(*photo.size, meta.preprocess, prepared=is_prepared_image(photo))
    predicted = prediction_caption(meta.classes, scored.probs, threshold)
    overlays, _ = explanation_images(photo, {map_name: scored.maps[map_name]}, box,
                                     prediction=predicted)
    return save_image(overlays[map_name], target, overwrite=overwrite)


def check_overlay_options(
    inputs: Sequence[str], overlay: Path | None, overlay_dir: Path | None, force: bool
) -> None:
    """Refuse ``--overlay`` with several inputs or onto an existing file; create output folders
    now, so that a folder that cannot be written fails once instead of once per image."""
    if overlay is not None and len(inputs) != 1:
        raise AttnMelError(
            f"--overlay takes exactly one input image, got {len(inputs)}; use --overlay-dir"
        )
    refuse_unless_forced(overlay if overlay is not None and overlay.exists() else None,
                         force=force)
    for folder in (overlay_dir, overlay.parent if overlay is not None else None):
        if folder is not None:
            ensure_dir(folder)


def overlay_map_name(session: ScoringSession, requested: str) -> str:
    """The map drawn in overlays: ``auto`` is the deepest one (pool-4, or the CAM)."""
    names = session.map_names()
    name = names[-1] if requested == "auto" and names else requested
    if name not in names:
        raise AttnMelError(
            f"{session.name}: a {session.meta.arch} checkpoint has no "
            f"{'attention' if requested == 'auto' else name} map to overlay "
            f"(available: {', '.join(names) or 'none'})"
        )
    return name
