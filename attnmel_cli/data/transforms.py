"""The paper's preprocessing (§3.1), one implementation for every command.

Photo ──decode (:mod:`attnmel_cli.data.decode`)──▶ square centre crop of side 0.8·min(H, W)
──resize──▶ 256×256 (the *prepared* image, as ``prepare`` stores it) ──resize to
R = round(S·256/224), centre crop S──▶ network input (S = the checkpoint's ``image_size``).
The parameters are :class:`attnmel_cli.config.PreprocessConfig`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from attnmel_cli.config import (
    CROP_FRACTION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPARED_SIZE,
    resize_size,
)


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
