"""Settings shared across the package: the preprocessing contract, worker defaults, a run's options.

- :class:`PreprocessConfig`: what turns a photograph into the network input (paper §3.1); the
  checkpoint records it (``mean``, ``std`` and the ``preprocessing`` header).
- ``default_*workers``: the one home of every command's worker-count default.
- :class:`TrainConfig`: every option of a training run, recorded in each of its checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attnmel_cli.data.sampler import OVERSAMPLE
from attnmel_cli.losses import FOCAL_GAMMA, LAMBDA1, LAMBDA2

CROP_FRACTION = 0.8  # paper §3.1: square centre crop, side 0.8·min(H, W)
PREPARED_SIZE = 256  # paper §3.1: then resized to 256×256
PAPER_INPUT_SIZE = 224  # random 224 crops of the 256 image in training
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bilinear"


def resize_size(image_size: int) -> int:
    """The side R the 256 image is resized to before the centre crop S (224 → 256)."""
    return round(image_size * PREPARED_SIZE / PAPER_INPUT_SIZE)


@dataclass(frozen=True)
class PreprocessConfig:
    """Photo → network input: centre crop ``crop_fraction``·min(H, W), resize to
    ``prepared_size``, resize to ``resize``, centre crop ``image_size``, normalise by
    ``mean``/``std``; ``resize`` 0 means the paper's ratio, round(S·256/224)."""

    image_size: int = PAPER_INPUT_SIZE
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_fraction: float = CROP_FRACTION
    prepared_size: int = PREPARED_SIZE
    resize: int = 0
    interpolation: str = INTERPOLATION

    def __post_init__(self) -> None:
        if not self.resize:
            object.__setattr__(self, "resize", resize_size(self.image_size))

    def to_metadata(self) -> dict[str, object]:
        """The checkpoint's ``preprocessing`` header (``mean`` and ``std`` are header keys of
        their own)."""
        return {
            "crop_fraction": self.crop_fraction,
            "prepared_size": self.prepared_size,
            "resize": self.resize,
            "image_size": self.image_size,
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_metadata(
        cls,
        preprocessing: dict[str, Any],
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> PreprocessConfig:
        """Inverse of :meth:`to_metadata` (with the checkpoint's ``mean`` and ``std``)."""
        return cls(
            image_size=int(preprocessing["image_size"]),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            crop_fraction=float(preprocessing["crop_fraction"]),
            prepared_size=int(preprocessing["prepared_size"]),
            resize=int(preprocessing["resize"]),
            interpolation=str(preprocessing["interpolation"]),
        )


def default_workers() -> int:
    """Decoding worker processes when scoring: the cores the network does not need to saturate,
    at least one (``predict``, ``explain``, ``evaluate``)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def default_prepare_workers() -> int:
    """Decoding threads of ``prepare``: min(4, CPU count)."""
    return min(4, os.cpu_count() or 1)


def default_train_workers(processes: int = 1) -> int:
    """DataLoader workers of ``train``: the cores besides the main process, at most 8
    (``processes`` training processes on the machine share its cores)."""
    return max(1, min(8, (os.cpu_count() or 2) // processes - 1))


@dataclass
class TrainConfig:
    """Every option of a run; recorded in each checkpoint's ``train_config``."""

    data: Path
    out: Path
    arch: str = "attnmel"
    backbone: str = "vgg16_bn"
    pretrained: bool = True  # ImageNet initialisation of the backbone (§3.1)
    pretrained_weights: Path | None = None
    roi: str = "none"
    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_step: int = 10  # epochs between learning-rate decays
    average_last: int = 0  # average the weights of the last K epochs into averaged.safetensors
    lr_decay: float = 0.1
    oversample: int = OVERSAMPLE
    gamma: float = FOCAL_GAMMA
    lambda1: float = LAMBDA1
    lambda2: float = LAMBDA2
    width: float = 1.0
    image_size: int = 224
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    workers: int | None = None  # None: default_train_workers()
    amp: bool = True  # mixed precision on CUDA
    cache_images: bool = True  # decode the training images once into RAM when they fit
    sync_bn: bool = False  # under torchrun: batch-norm statistics over the global batch (CUDA)
    resume: bool = False
    force: bool = False

    def as_record(self) -> dict[str, Any]:
        """JSON-able dict (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
