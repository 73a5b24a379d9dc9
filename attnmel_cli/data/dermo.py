"""The paper's "dermo" reference map from ISIC 2017 Part 2: the union of four dermoscopic
features over the superpixels of each ``ISIC_*_features.json`` (index R + (G<<8) + (B<<16))."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from attnmel_cli.data.decode import DECODE_ERRORS
from attnmel_cli.errors import InputError

DERMO_FEATURES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst")


def features_union(path: Path) -> np.ndarray:
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


def open_map(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot decode ({exc})") from None


def _superpixel_index(img: Image.Image) -> np.ndarray:
    """ISIC 2017 Part 2 superpixel index: R + (G << 8) + (B << 16)."""
    rgb = np.asarray(img, dtype=np.uint32)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


def dermo_map(superpixels: Path, features: Path) -> Image.Image:
    """The paper's dermo map on the source grid: 255 where any of the four features is marked."""
    union = features_union(features)
    index = _superpixel_index(open_map(superpixels, "RGB"))
    if index.max() >= len(union):
        raise InputError(
            f"{superpixels}: superpixel index {int(index.max())} beyond the "
            f"{len(union)} entries of {features.name}"
        )
    return Image.fromarray(np.where(union[index], 255, 0).astype(np.uint8), "L")
