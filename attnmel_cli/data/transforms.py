"""The paper's preprocessing (§3.1), one implementation for every command.

Photo ──decode (:mod:`attnmel_cli.data.decode`)──▶ square centre crop of side 0.8·min(H, W)
──resize──▶ 256×256 (the *prepared* image, as ``prepare`` stores it) ──resize to
R = round(S·256/224), centre crop S──▶ network input (S = the checkpoint's ``image_size``).
The parameters are :class:`attnmel_cli.config.PreprocessConfig`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
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


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (..., 3, H, W) → float32 (x/255 − mean) / std, on the images' device.

    The one normalisation of attnmel: training normalises its batches with it on the device,
    scoring each image with it in the loader (:func:`prepared_to_input`).
    """
    shape = (3, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    return (images.float() / 255.0 - m) / s


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image → uint8 tensor (3, H, W)."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def prepared_to_input(img: Image.Image, pre: PreprocessConfig) -> torch.Tensor:
    """A prepared 256×256 image → network input (3, S, S): resize to R, centre crop S,
    normalise."""
    r = pre.resize
    if img.size != (r, r):
        img = img.resize((r, r), Image.BILINEAR)
    return normalize(to_uint8_tensor(centre_crop(img, pre.image_size)), pre.mean, pre.std)


def photo_to_input(img: Image.Image, pre: PreprocessConfig) -> torch.Tensor:
    """A decoded photograph → network input (3, S, S), exactly as ``prepare`` + inference do."""
    cropped = paper_crop(img, pre.prepared_size, pre.crop_fraction)
    return prepared_to_input(cropped, pre)
