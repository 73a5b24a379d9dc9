"""The training Dataset over a prepared dir: 256×256 images (and ROI masks) → augmented views.

Items are keyed by ``(index, augmentation_seed)`` pairs from
:class:`attnmel_cli.data.sampler.OversamplingSampler`. Images stay uint8 until they reach the device
(normalisation happens there, batched), which keeps worker output and host-device copies small.

Reference maps per ``roi`` (paper §3.2):
- ``lesion``: the lesion mask; ``background``: its inverse. An image without a lesion mask has
  an unknown reference: it is left out of the Dice terms (``known`` is False) rather than given an
  all-zero map that would claim "no lesion" (or "all background").
- ``dermo``: the union of the dermoscopic features. An image without a dermo map has none of the
  features, so its all-zero map is a valid reference (the paper's "sparse" maps).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from attnmel_cli.config import PREPARED_SIZE, resize_size
from attnmel_cli.data.augment import AUGMENTS
from attnmel_cli.data.manifest import Row
from attnmel_cli.errors import DataError

ROIS = ("none", "lesion", "dermo", "background")
TrainItem = tuple[Tensor, Tensor, bool, int]


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot read prepared file ({exc})") from None
    if img.size != (PREPARED_SIZE, PREPARED_SIZE):
        raise DataError(
            f"{path}: is {img.size[0]}×{img.size[1]}, not the prepared {PREPARED_SIZE}×"
            f"{PREPARED_SIZE}; re-run `attnmel prepare`"
        )
    return img


def roi_path(row: Row, roi: str) -> str | None:
    """The mask file the ``roi`` reference is read from (``None``: absent)."""
    return row.dermo_mask if roi == "dermo" else row.lesion_mask


def roi_known(row: Row, roi: str) -> bool:
    """Whether ``row`` has a usable reference map for ``roi`` (see the module docstring)."""
    return roi == "dermo" or (roi != "none" and row.lesion_mask is not None)


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, where the OS says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


class TrainSet(Dataset[TrainItem]):
    """``(index, seed)`` → (image uint8 (3, S, S), roi, known, class index).

    ``roi`` is uint8 (1, S, S) in {0, 1}, or empty (0,) when ``roi='none'``; ``known`` says
    whether the image has a reference map (module docstring).

    The prepared image is resized to R = resize_size(S) (bilinear, masks nearest) and a random
    S×S view is cut by the ``augment`` of :data:`attnmel_cli.data.augment.AUGMENTS`, the mask
    transformed with it.
    :meth:`cache` decodes every image once into RAM (PNG decoding is most of the per-sample
    cost); DataLoader workers then share that tensor (copy-on-write after fork, or moved to
    shared memory by torch's pickler under spawn) and only cut views from it.
    """

    def __init__(
        self, root: Path | Sequence[Path], rows: Sequence[Row], image_size: int,
        roi: str = "none", labels: Sequence[int] | None = None, augment: str = "paper",
    ) -> None:
        if roi not in ROIS:
            raise DataError(f"unknown roi {roi!r}; choose one of {', '.join(ROIS)}")
        self.rows, self.size, self.roi = list(rows), image_size, roi
        # the prepared dir of each row (several with ``train --data A --data B``)
        self.roots = [root] * len(self.rows) if isinstance(root, Path) else list(root)
        self.view = AUGMENTS[augment]
        # class index of each row (multi-class training); default the binary melanoma label
        self.labels = list(labels) if labels is not None else [r.label for r in self.rows]
        self.resize = resize_size(image_size)
        self.cached: Tensor | None = None  # (n, R, R, C) uint8 once cached

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def cache_bytes(self) -> int:
        """RAM that :meth:`cache` takes."""
        return len(self.rows) * self.resize**2 * (3 if self.roi == "none" else 4)

    def cache(self, threads: int = 1) -> None:
        """Decode every image (and reference map) once into one uint8 tensor (n, R, R, C)."""
        channels = 3 if self.roi == "none" else 4
        shape = (len(self.rows), self.resize, self.resize, channels)
        cached = torch.empty(shape, dtype=torch.uint8)

        def fill(index: int) -> None:
            cached[index] = torch.from_numpy(self._planes(index))

        with ThreadPoolExecutor(max(1, threads)) as pool:  # Pillow decodes without the GIL
            list(pool.map(fill, range(len(self.rows))))
        self.cached = cached

    def _planes(self, index: int) -> np.ndarray:
        """(R, R, 3 or 4) uint8: row ``index``'s image, plus the reference map in {0, 1} when
        roi is set."""
        row, root, r = self.rows[index], self.roots[index], (self.resize, self.resize)
        img = _open(root / row.image, "RGB")
        if img.size != r:
            img = img.resize(r, Image.BILINEAR)
        planes = np.array(img)  # writable copy for torch.from_numpy
        if self.roi == "none":
            return planes
        mask_file = roi_path(row, self.roi)
        if mask_file is None:
            ref = np.zeros(r, np.uint8)
        else:
            mask = _open(root / mask_file, "L")
            if mask.size != r:
                mask = mask.resize(r, Image.NEAREST)
            ref = (np.asarray(mask) > 127).astype(np.uint8)
            if self.roi == "background":
                ref = 1 - ref
        return np.dstack([planes, ref])

    def __getitem__(self, key: tuple[int, int]) -> TrainItem:
        index, seed = key
        row = self.rows[index]
        planes = (self.cached[index] if self.cached is not None
                  else torch.from_numpy(self._planes(index)))
        generator = torch.Generator().manual_seed(seed)
        view = self.view(planes.permute(2, 0, 1), self.size, generator)
        roi = view[3:] if self.roi != "none" else torch.zeros(0, dtype=torch.uint8)
        return view[:3], roi, roi_known(row, self.roi), self.labels[index]
