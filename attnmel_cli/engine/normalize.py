"""The input normalisation a run trains with (``--normalize``), stored in its checkpoints.

- ``backbone`` (default): what the backbone's ImageNet weights were trained with: ImageNet's
  mean/std for VGG (torchvision), timm's data config otherwise (EfficientNet-Lite: 0.5/0.5,
  i.e. (pixel − 127.5) / 127.5). Pretrained features are only meaningful on inputs normalised
  the way they were learnt, so this is the default.
- ``imagenet``: ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
- ``dataset``: the training images' own per-channel pixel mean and standard deviation (the
  authors' code normalises ISIC 2017 this way), computed over the prepared training images.
- ``MEAN,STD`` (one value for every channel) or ``M1,M2,M3,S1,S2,S3``: given explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from attnmel_cli.config import IMAGENET_MEAN, IMAGENET_STD, TrainConfig
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.models.backbones.base import backbone_normalization

NAMED = ("backbone", "imagenet", "dataset")
Stats = tuple[tuple[float, ...], tuple[float, ...]]


def parse_normalize(text: str) -> str | Stats:
    """A named normalisation, or explicit (mean, std) of three values each."""
    if text in NAMED:
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 2:
        values = [values[0]] * 3 + [values[1]] * 3
    if len(values) != 6 or min(values[3:]) <= 0:
        raise AttnMelError(
            f"--normalize {text!r}: use {', '.join(NAMED)}, MEAN,STD or M1,M2,M3,S1,S2,S3 "
            "(pixels in [0, 1], every std > 0)"
        )
    return tuple(values[:3]), tuple(values[3:])


def dataset_mean_std(paths: Sequence[Path]) -> Stats:
    """Per-channel mean and standard deviation of every pixel of the prepared training images."""
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for path in paths:
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
        except OSError as exc:
            raise DataError(f"{path}: cannot read prepared image ({exc})") from None
        total += pixels.sum(0)
        squares += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def normalization(config: TrainConfig, paths: Sequence[Path]) -> Stats:
    """The (mean, std) this run normalises its inputs with (module docstring); ``paths``: the
    prepared training images (read for ``dataset`` only)."""
    choice = parse_normalize(config.normalize)
    if choice == "backbone":
        return backbone_normalization(config.backbone)
    if choice == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if choice == "dataset":
        return dataset_mean_std(paths)
    assert isinstance(choice, tuple)
    return choice
