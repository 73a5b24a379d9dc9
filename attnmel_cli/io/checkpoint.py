"""Checkpoint I/O: one ``.safetensors`` file, JSON metadata in its header; never unpickles.

Header metadata (string → string, per the safetensors format): ``format``, ``format_version``,
``arch``, ``backbone``, ``strides`` (the backbone's three feature strides: the first two carry
the attention gates; absent before 0.2 and then (8, 16, 32)), ``width``, ``image_size``,
``classes``, ``mean``, ``std``, ``preprocessing`` (crop fraction, prepared size, resize, input
size, interpolation: authoritative on load), ``train_config`` (no absolute paths), ``metrics``,
``data_fingerprint`` (the target prepared dir's), ``sources`` (runs on several prepared dirs:
each one's name, data fingerprint, weight, images, melanomas, crop fraction and role; absent for
one), ``attnmel_version``, and (since 0.2, for a trained model) ``train_image_ids``: the ids of
the images it trained on as a compact hash set (:mod:`attnmel_cli.data.id_set`), so that
``evaluate`` can tell when it scores them; non-string values are JSON-encoded. Read without torch
(ONNX models carry the same header); a model to and from its checkpoint: :mod:`.model_checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from attnmel_cli import __version__
from attnmel_cli.config import (
    CROP_FRACTION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATION,
    PREPARED_SIZE,
    PreprocessConfig,
    resize_size,
)
from attnmel_cli.errors import AttnMelError, CheckpointError
from attnmel_cli.io.atomic import atomic_path
from attnmel_cli.io.meta_fields import FieldError, integer, parse_header
from attnmel_cli.io.safe_text import printable
from attnmel_cli.models.backbones.specs import DEFAULT_STRIDES, check_backbone_name
from attnmel_cli.models.names import ARCHS, CLASSES, class_problems

if TYPE_CHECKING:  # CheckpointMeta is read without torch too (ONNX models carry the header)
    from torch import Tensor

FORMAT = "attnmel-checkpoint"
FORMAT_VERSION = 1
_PICKLE_MAGIC = {b"PK\x03\x04": "a zip archive (PyTorch's torch.save format)", b"\x80": "a pickle"}


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its model; ``to_header``/``from_header`` map it to strings."""

    arch: str = "attnmel"
    backbone: str = "vgg16_bn"
    width: float = 1.0
    image_size: int = 224
    classes: tuple[str, ...] = CLASSES
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    attnmel_version: str = __version__
    strides: tuple[int, int, int] = DEFAULT_STRIDES
    resize: int = 0  # 0: the paper's ratio, round(image_size·256/224)
    crop_fraction: float = CROP_FRACTION
    prepared_size: int = PREPARED_SIZE
    interpolation: str = INTERPOLATION
    sources: list[dict[str, Any]] = field(default_factory=list)  # several --data dirs
    train_image_ids: str = ""  # data.id_set.encode_ids of the training images ("": unknown)

    def __post_init__(self) -> None:
        if not self.resize:  # the paper's ratio, as every checkpoint before 0.2 had it
            self.resize = resize_size(self.image_size)

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing this checkpoint's model expects (what every command applies)."""
        return PreprocessConfig(
            image_size=self.image_size, mean=self.mean, std=self.std,
            crop_fraction=self.crop_fraction, prepared_size=self.prepared_size,
            resize=self.resize, interpolation=self.interpolation,
        )

    @property
    def preprocessing(self) -> dict[str, object]:
        """The ``preprocessing`` header."""
        return self.preprocess.to_metadata()

    def to_header(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "backbone": self.backbone,
            "strides": list(self.strides),
            "width": self.width,
            "image_size": self.image_size,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "preprocessing": self.preprocessing,
            "train_config": self.train_config,
            "metrics": self.metrics,
            "data_fingerprint": self.data_fingerprint,
            "attnmel_version": self.attnmel_version,
            **({"sources": self.sources} if self.sources else {}),
        }
        if self.train_image_ids:
            values["train_image_ids"] = self.train_image_ids
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}

    @classmethod
    def from_header(cls, path: Path, header: dict[str, str] | None) -> CheckpointMeta:
        """Validate header metadata; raise CheckpointError saying what is wrong."""
        header = header or {}
        if header.get("format") != FORMAT:
            raise CheckpointError(
                f"{path}: a safetensors file but not an attnmel checkpoint (no "
                f"format={FORMAT!r} in its metadata)"
            )
        try:
            version = integer("format_version", header.get("format_version", ""), high=10**6)
            fields = parse_header(header)
        except FieldError as exc:
            raise CheckpointError(f"{path}: invalid attnmel checkpoint metadata: {exc}") from None
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format {version} is newer than this attnmel supports "
                f"({FORMAT_VERSION}); upgrade attnmel"
            )
        pre_size = fields.pop("preprocessing_image_size")
        meta = cls(**fields)
        problems = _problems(meta)
        if pre_size is not None and pre_size != meta.image_size:
            problems.append(f"preprocessing image_size {pre_size} ≠ image_size {meta.image_size}")
        if problems:
            raise CheckpointError(
                f"{path}: invalid attnmel checkpoint metadata: {'; '.join(problems)}"
            )
        return meta


def _problems(meta: CheckpointMeta) -> list[str]:
    """What is wrong with validly typed metadata (empty: nothing)."""
    problems = []
    if meta.arch not in ARCHS:
        problems.append(f"unknown arch {printable(repr(meta.arch))}")
    try:
        check_backbone_name(meta.backbone)
    except AttnMelError:
        problems.append(f"unknown backbone {printable(repr(meta.backbone))}")
    if len(meta.strides) != 3 or list(meta.strides) != sorted(set(meta.strides)):
        problems.append(f"strides {list(meta.strides)} are not three increasing strides")
    if not 0 < meta.crop_fraction <= 1:
        problems.append(f"crop_fraction {meta.crop_fraction} outside (0, 1]")
    if meta.interpolation != INTERPOLATION:
        problems.append(f"interpolation {printable(repr(meta.interpolation))} unsupported "
                        "(only bilinear)")
    if meta.resize and meta.resize < meta.image_size:
        problems.append(f"resize {meta.resize} smaller than image_size {meta.image_size}")
    if not 0 < meta.width <= 1:
        problems.append(f"width {meta.width} outside (0, 1]")
    if meta.image_size < 32 or meta.image_size % 32:
        problems.append(f"image_size {meta.image_size} not a multiple of 32")
    problems += class_problems(meta.classes)
    if len(meta.mean) != 3 or len(meta.std) != 3:
        problems.append("mean/std of the wrong length")
    return problems


def _describe_non_safetensors(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(8)
    for magic, what in _PICKLE_MAGIC.items():
        if head.startswith(magic):
            return (
                f"{path}: is {what}, not a safetensors file; attnmel never unpickles checkpoints "
                "(it could execute code): use an attnmel .safetensors checkpoint"
            )
    return f"{path}: not a safetensors file (truncated, corrupt or another format)"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found" if not path.exists() else f"{path}: not a file"
        )


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """The one-line error for a file safetensors could not open."""
    if isinstance(exc, PermissionError):
        return CheckpointError(f"{path}: permission denied")
    return CheckpointError(_describe_non_safetensors(path))


def read_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the raw header metadata of any safetensors file, validated by safetensors."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open API
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    return tensors, header


def save_file(tensors: dict[str, Tensor], tmp: str, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file``, imported on first use: metadata reads without torch."""
    import safetensors.torch

    safetensors.torch.save_file(tensors, tmp, metadata=metadata)


def write_tensors(
    path: str | Path, tensors: dict[str, Tensor], header: dict[str, str], *, overwrite: bool = True
) -> Path:
    """Write tensors + string metadata atomically (temporary file, then rename)."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            save_file(contiguous, str(tmp), metadata=header)
        except SafetensorError as exc:  # how safetensors reports I/O errors (disk full…)
            raise OSError(str(exc)) from None
    return Path(path)


def read_header(path: str | Path) -> dict[str, str]:
    """The raw header metadata of a safetensors file, without reading its tensors (or importing
    torch: a missing or foreign file is reported before anything heavy loads)."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None


def read_metadata(path: str | Path) -> CheckpointMeta:
    """Validated metadata of an attnmel checkpoint, without building the model."""
    path = Path(path)
    return CheckpointMeta.from_header(path, read_header(path))
