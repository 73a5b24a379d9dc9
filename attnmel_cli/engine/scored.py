"""What every scoring session shares, PyTorch and ONNX Runtime alike, without importing torch:
how to score (:class:`ScoringOptions`), one input's result (:class:`Scored`), the decode +
preprocess step (:func:`load_input`) and the interface ``predict``/``explain`` drive
(:class:`ScoringSession`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.decode import DEFAULT_MAX_PIXELS, load_photo
from attnmel_cli.data.transforms import photo_to_array, prepared_to_array
from attnmel_cli.data.writer import is_prepared_image
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.models.names import MAPS

# Test-time augmentation (:mod:`attnmel_cli.engine.tta`): (k quarter turns, horizontal flip
# first) for the 8 elements of the dihedral group D4.
VIEWS: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))


@dataclass(frozen=True)
class ScoringOptions:
    """How a session scores, passed whole from the command to the engine (PyTorch or ONNX
    Runtime): the one contract of ``predict``, ``explain``, ``evaluate`` and validation.

    ``batch_size``: images per network call. ``workers``: decoding workers (None: the backend's
    default, :func:`attnmel_cli.parallel.scoring_workers`). ``max_pixels``: the decompression-
    bomb guard. ``amp``: bf16 autocast on CUDA (PyTorch only; rounds the logits, so scores may
    tie). ``tta``: average the 8 flips/rotations (8× the work). ``keep_maps``: attach each
    image's attention maps (or CAM) as float32 arrays. ``prepared``: every input is a prepared
    256×256 image (skip the paper crop).
    """

    batch_size: int = 16
    workers: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    amp: bool = False
    tta: bool = False
    keep_maps: bool = False
    prepared: bool = False

    def but(self, **changes: Any) -> ScoringOptions:
        """These options with ``changes`` (``dataclasses.replace``)."""
        return replace(self, **changes)


DEFAULT_OPTIONS = ScoringOptions()


@dataclass
class Scored:
    """One input's result: melanoma probability, every class's probability (in the order of
    the checkpoint's ``classes``) and (optionally) its maps at network resolution."""

    index: int
    path: str
    p_melanoma: float | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # name → (h, w) float32
    error: str | None = None
    probs: tuple[float, ...] = ()  # (K,) softmax over the checkpoint's classes


def load_input(
    path: str | Path, pre: PreprocessConfig, *, prepared: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode ``path`` and preprocess it: network input (3, S, S) float32.

    ``prepared``: the file is a prepared 256×256 image; otherwise a file that ``prepare`` wrote
    (:func:`attnmel_cli.data.writer.is_prepared_image`) skips the paper crop, which it has had
    already. Raises :class:`attnmel_cli.errors.InputError` for a file that cannot be used.
    """
    img = load_photo(path, max_pixels=max_pixels)  # full decode: no draft (data.decode)
    to_array = prepared_to_array if prepared or is_prepared_image(img) else photo_to_array
    return to_array(img, pre)


class ScoringSession(Protocol):
    """A loaded model ready to score (:class:`attnmel_cli.engine.inference.Session`, or
    :class:`attnmel_cli.deploy.runtime.OnnxSession`)."""

    meta: CheckpointMeta
    name: str

    def map_names(self) -> list[str]: ...

    def score(
        self, paths: Sequence[str], options: ScoringOptions = DEFAULT_OPTIONS
    ) -> Iterator[Scored]: ...


def non_finite(path: str, model: str, probs: Sequence[float] | np.ndarray) -> str | None:
    """The error of the image ``path`` whose class probabilities by ``model`` are not all
    finite (None: they are): a NaN is never reported as a class."""
    if np.isfinite(np.asarray(probs, dtype=np.float64)).all():
        return None
    return f"{path}: {model} gave a non-finite probability (NaN or infinity) for this image"


def map_names(meta: CheckpointMeta) -> list[str]:
    """The maps a checkpoint's variant produces (pool3/pool4 or cam, or none)."""
    return list(MAPS.get(meta.arch, ()))


def apply_view(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """x (..., H, W) → the view: flipped left–right (if ``flip``), then rotated k·90° (as
    :func:`attnmel_cli.engine.tta.apply_view` does to tensors)."""
    y = x[..., ::-1] if flip else x
    return np.ascontiguousarray(np.rot90(y, k, axes=(-2, -1)))


def undo_view(y: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The inverse of :func:`apply_view`: a map computed on the view, back in input orientation."""
    x = np.rot90(y, -k, axes=(-2, -1))
    return np.ascontiguousarray(x[..., ::-1] if flip else x)
