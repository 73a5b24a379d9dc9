"""Image decoding and the paper's preprocessing (§3.1), one implementation for every command.

Photo ──decode (EXIF, any mode → RGB, draft JPEG decoding)──▶ square centre crop of side
0.8·min(H, W) ──resize──▶ 256×256 (the *prepared* image, as ``prepare`` stores it) ──resize to
R = round(S·256/224), centre crop S──▶ network input (S = the checkpoint's ``image_size``).
"""

from __future__ import annotations

import logging
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from attnmel_cli.errors import InputError

log = logging.getLogger("attnmel")

CROP_FRACTION = 0.8  # paper §3.1: square centre crop, side 0.8·min(H, W)
PREPARED_SIZE = 256  # paper §3.1: then resized to 256×256
PAPER_INPUT_SIZE = 224  # random 224 crops of the 256 image in training
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MAX_PIXELS = 150_000_000  # decompression-bomb guard; ISIC photos are at most ~30 MP
MIN_SIDE = 16  # smaller images carry no lesion detail worth scoring

# attnmel applies its own pixel limit (with a flag to raise it) instead of Pillow's global one.
Image.MAX_IMAGE_PIXELS = None

# What Pillow raises on files it cannot decode (found by tests/test_fuzz.py on mutated images).
DECODE_ERRORS = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
    MemoryError, Image.DecompressionBombError, OverflowError, struct.error, KeyError,
    ZeroDivisionError,
)
_DECODE_ERRORS = DECODE_ERRORS


def resize_size(image_size: int) -> int:
    """The side R the 256 image is resized to before the centre crop S (224 → 256)."""
    return round(image_size * PREPARED_SIZE / PAPER_INPUT_SIZE)


def paper_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square centre crop of side 0.8·min(H, W)."""
    side = max(1, round(CROP_FRACTION * min(width, height)))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def network_box(width: int, height: int, image_size: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the region of a width×height photo the network sees."""
    left, top, right, _ = paper_crop_box(width, height)
    side = right - left
    r = resize_size(image_size)
    scale = side / r
    off = (r - image_size) // 2
    x0, y0 = left + off * scale, top + off * scale
    return x0, y0, x0 + image_size * scale, y0 + image_size * scale


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


def load_photo(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_min_side: int | None = None,
    warn_frames: bool = True,
) -> Image.Image:
    """Decode ``path`` to an RGB image with its EXIF orientation applied.

    ``draft_min_side``: let the JPEG decoder reduce by 2/4/8 while the paper crop keeps at least
    that many pixels (fast decoding of large photos; ``None`` decodes at full resolution).
    ``warn_frames``: log a warning for an animation or multi-page file (its first frame is used);
    off where the same file is decoded a second time.
    Raises :class:`InputError` naming the file for anything that is not a usable image.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
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
            img = _to_rgb(img)
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot decode image ({exc})") from None
    if min(img.size) < MIN_SIDE:
        raise InputError(
            f"{path}: image is {img.size[0]}×{img.size[1]} px, smaller than the minimum "
            f"{MIN_SIDE} px side"
        )
    return img


def paper_crop(img: Image.Image, size: int = PREPARED_SIZE) -> Image.Image:
    """Paper §3.1: square centre crop of side 0.8·min(H, W), resized to ``size``×``size``."""
    box = paper_crop_box(*img.size)
    return img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=3.0)


def centre_crop(img: Image.Image, size: int) -> Image.Image:
    """Central ``size``×``size`` crop of an image at least that large."""
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(
    img: Image.Image,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB image → normalised float tensor of shape (3, H, W)."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def prepared_to_input(
    img: Image.Image,
    image_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """A prepared 256×256 image → network input (3, S, S): resize to R, centre crop S."""
    r = resize_size(image_size)
    if img.size != (r, r):
        img = img.resize((r, r), Image.BILINEAR)
    return to_tensor(centre_crop(img, image_size), mean, std)


def photo_to_input(
    img: Image.Image,
    image_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """A decoded photograph → network input (3, S, S), exactly as ``prepare`` + inference do."""
    return prepared_to_input(paper_crop(img), image_size, mean, std)


def preprocessing_metadata(image_size: int) -> dict[str, object]:
    """What a checkpoint records about the preprocessing its model expects."""
    return {
        "crop_fraction": CROP_FRACTION,
        "prepared_size": PREPARED_SIZE,
        "resize": resize_size(image_size),
        "image_size": image_size,
        "interpolation": "bilinear",
    }
