"""Decoding photographs: EXIF orientation, any Pillow mode to RGB, and a pixel limit against
decompression bombs. Every command decodes photos through :func:`load_photo`.

Scoring and ``prepare`` decode every photo at full resolution: the reduced-scale ("draft") JPEG
decode is not the same downscale as the paper crop's antialiased resize, and the models tell
the difference (up to 0.13 in p_melanoma on the ISIC 2016 photos; even a 2× draft moved it by
0.06). Only pictures for people (the HTML report's thumbnails) use the draft decode.
"""

from __future__ import annotations

import logging
import math
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from attnmel_cli.config import CROP_FRACTION, DEFAULT_MAX_PIXELS
from attnmel_cli.errors import InputError

log = logging.getLogger("attnmel")

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "MIN_SIDE", "load_photo"]

# What every command takes for an image file (prepare's sources, predict's folders…).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm"}
)
MIN_SIDE = 16  # smaller images carry no lesion detail worth scoring

# attnmel applies its own pixel limit (with a flag to raise it) instead of Pillow's global one.
Image.MAX_IMAGE_PIXELS = None

# What Pillow raises on files it cannot decode (found by tests/test_fuzz.py on mutated images).
DECODE_ERRORS = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
    MemoryError, Image.DecompressionBombError, OverflowError, struct.error, KeyError,
    ZeroDivisionError,
)
# EXIF orientation → the transpose ImageOps.exif_transpose applies to the photo (masks follow it).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (16-bit, float, palette with transparency, CMYK…) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit range → 8-bit
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _file_size(path: Path) -> int:
    """The size of the file ``path``, or InputError naming what is wrong with it."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _decode(
    path: Path, max_pixels: int, draft_min_side: int | None, warn_frames: bool
) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = Image.open(path)
        w, h = img.size
        if w * h > max_pixels:
            raise InputError(
                f"{path}: declares {w}×{h} = {w * h / 1e6:.0f} MP, over the pixel limit of "
                f"{max_pixels / 1e6:.0f} MP (possible decompression bomb); raise it with "
                "--max-pixels if the file is genuine"
            )
        if warn_frames and getattr(img, "n_frames", 1) > 1:
            log.warning("%s: has %d frames; using the first", path, img.n_frames)
        if draft_min_side and img.format == "JPEG":
            scale = draft_min_side / (CROP_FRACTION * min(w, h))
            if scale < 0.5:
                img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)


def load_photo(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_min_side: int | None = None,
    warn_frames: bool = True,
) -> Image.Image:
    """Decode ``path`` to an RGB image with its EXIF orientation applied.

    ``draft_min_side``: let the JPEG decoder reduce by 2/4/8 while the paper crop keeps at least
    that many pixels (fast decoding of large photos, for display only: a model's input must come
    from the full decode; ``None`` decodes at full resolution).
    ``warn_frames``: log a warning for an animation or multi-page file (its first frame is used);
    off where the same file is decoded a second time.
    Raises :class:`InputError` naming the file for anything that is not a usable image.
    """
    path = Path(path)
    if _file_size(path) == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        img = _decode(path, max_pixels, draft_min_side, warn_frames)
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot decode image ({exc})") from None
    if min(img.size) < MIN_SIDE:
        raise InputError(
            f"{path}: image is {img.size[0]}×{img.size[1]} px, smaller than the minimum "
            f"{MIN_SIDE} px side"
        )
    return img
