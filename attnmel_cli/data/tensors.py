"""The preprocessing of :mod:`attnmel_cli.data.transforms` as torch tensors (one implementation:
these wrap the numpy arrays), and the normalisation training applies to its batches on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.transforms import photo_to_array, prepared_to_array, to_chw


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (..., 3, H, W) → float32 (x/255 − mean) / std, on the images' device: the
    formula of :func:`attnmel_cli.data.transforms.normalize_array`, for training batches."""
    shape = (3, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    return (images.float() / 255.0 - m) / s


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image → uint8 tensor (3, H, W)."""
    return torch.from_numpy(to_chw(img))


def prepared_to_input(img: Image.Image, pre: PreprocessConfig) -> torch.Tensor:
    """A prepared 256×256 image → network input tensor (3, S, S)."""
    return torch.from_numpy(prepared_to_array(img, pre))


def photo_to_input(img: Image.Image, pre: PreprocessConfig) -> torch.Tensor:
    """A decoded photograph → network input tensor (3, S, S)."""
    return torch.from_numpy(photo_to_array(img, pre))
