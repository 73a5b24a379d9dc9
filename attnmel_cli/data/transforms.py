"""The paper's preprocessing (§3.1), one implementation for every command.

Photo ──decode (:mod:`attnmel_cli.data.decode`)──▶ square centre crop of side 0.8·min(H, W)
──resize──▶ 256×256 (the *prepared* image, as ``prepare`` stores it) ──resize to
R = round(S·256/224), centre crop S──▶ network input (S = the checkpoint's ``image_size``).
The parameters are :class:`attnmel_cli.config.PreprocessConfig`'s. Numpy and Pillow only: the
ONNX Runtime path scores without torch; :mod:`attnmel_cli.data.tensors` wraps these for PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from attnmel_cli.config import CROP_FRACTION, PREPARED_SIZE, PreprocessConfig


def paper_crop_box(
    width: int, height: int, crop_fraction: float = CROP_FRACTION
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square centre crop of side 0.8·min(H, W)."""
    side = max(1, round(crop_fraction * min(width, height)))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def network_box(
    width: int, height: int, pre: PreprocessConfig, *, prepared: bool = False
) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the region of a width×height photo the network sees
    (``prepared``: the image is one ``prepare`` wrote, its paper crop done already)."""
    left, top, right, _ = (
        (0, 0, width, height) if prepared else paper_crop_box(width, height, pre.crop_fraction)
    )
    side = right - left
    scale = side / pre.resize
    off = (pre.resize - pre.image_size) // 2
    x0, y0 = left + off * scale, top + off * scale
    return x0, y0, x0 + pre.image_size * scale, y0 + pre.image_size * scale


def paper_crop(
    img: Image.Image, size: int = PREPARED_SIZE, crop_fraction: float = CROP_FRACTION
) -> Image.Image:
    """Paper §3.1: square centre crop of side 0.8·min(H, W), resized to ``size``×``size``."""
    box = paper_crop_box(*img.size, crop_fraction)
    return img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=3.0)


def centre_crop(img: Image.Image, size: int) -> Image.Image:
    """Central ``size``×``size`` crop of an image at least that large."""
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def normalize_array(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 images (..., 3, H, W) → float32 (x/255 − mean) / std.

    Scoring's normalisation (PyTorch and ONNX Runtime alike); training applies the same formula
    to its batches on the device (:func:`attnmel_cli.data.tensors.normalize`).
    """
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (images.astype(np.float32) / np.float32(255.0) - m) / s


def to_chw(img: Image.Image) -> np.ndarray:
    """RGB image → uint8 array (3, H, W)."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def prepared_to_array(img: Image.Image, pre: PreprocessConfig) -> np.ndarray:
    """A prepared 256×256 image → network input (3, S, S) float32: resize to R, centre crop S,
    normalise."""
    r = pre.resize
    if img.size != (r, r):
        img = img.resize((r, r), Image.BILINEAR)
    return normalize_array(to_chw(centre_crop(img, pre.image_size)), pre.mean, pre.std)


def photo_to_array(img: Image.Image, pre: PreprocessConfig) -> np.ndarray:
    """A decoded photograph → network input (3, S, S) float32, exactly as ``prepare`` + inference
    do."""
    cropped = paper_crop(img, pre.prepared_size, pre.crop_fraction)
    return prepared_to_array(cropped, pre)
