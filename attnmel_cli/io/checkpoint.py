"""Checkpoint I/O: one ``.safetensors`` file, JSON metadata in its header; never unpickles.

Header metadata (string → string, per the safetensors format): ``format``, ``format_version``,
``arch``, ``backbone``, ``strides`` (the backbone's three feature strides: the first two carry
the attention gates; absent before 0.2 and then (8, 16, 32)), ``width``, ``image_size``,
``classes``, ``mean``, ``std``, ``preprocessing`` (crop fraction, prepared size, resize, input
size, interpolation: authoritative on load), ``train_config`` (no absolute paths), ``metrics``,
``data_fingerprint``, ``attnmel_version``, and (since 0.2, for a trained model)
``train_image_ids``: the ids of the images it trained on as a compact hash set
(:mod:`attnmel_cli.data.id_set`), so that ``evaluate`` can tell when it scores them; non-string
values are JSON-encoded. Loading validates
the metadata, builds the model from it (:func:`attnmel_cli.models.registry.model_from_meta`) and
loads the tensors strictly.
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
from attnmel_cli.models.backbones.base import DEFAULT_STRIDES, check_backbone_name
from attnmel_cli.models.names import ARCHS, CLASSES, class_problems

if TYPE_CHECKING:  # CheckpointMeta is read without torch too (ONNX models carry the header)
    import torch
    from torch import Tensor

    from attnmel_cli.models.attnmel import AttnMelNet

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
            version = int(header.get("format_version", ""))
            meta = cls(
                arch=header["arch"],
                backbone=header["backbone"],
                width=float(header["width"]),
                image_size=int(header["image_size"]),
                classes=tuple(json.loads(header["classes"])),
                mean=tuple(float(v) for v in json.loads(header["mean"])),
                std=tuple(float(v) for v in json.loads(header["std"])),
                train_config=json.loads(header.get("train_config", "{}")),
                metrics=json.loads(header.get("metrics", "{}")),
                data_fingerprint=header.get("data_fingerprint", ""),
                attnmel_version=header.get("attnmel_version", "unknown"),
                train_image_ids=header.get("train_image_ids", ""),
                strides=tuple(int(v) for v in json.loads(header.get("strides", "[8, 16, 32]"))),
                **_preprocessing_fields(header),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{path}: invalid attnmel checkpoint metadata ({exc!r})"
            ) from None
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format {version} is newer than this attnmel supports "
                f"({FORMAT_VERSION}); upgrade attnmel"
            )
        problems = _problems(meta)
        pre_size = json.loads(header.get("preprocessing", "{}")).get("image_size", meta.image_size)
        if int(pre_size) != meta.image_size:
            problems.append(f"preprocessing image_size {pre_size} ≠ image_size {meta.image_size}")
        if problems:
            raise CheckpointError(
                f"{path}: invalid attnmel checkpoint metadata: {'; '.join(problems)}"
            )
        return meta


def _preprocessing_fields(header: dict[str, str]) -> dict[str, Any]:
    """The ``preprocessing`` header as CheckpointMeta fields (absent: the paper's defaults)."""
    if "preprocessing" not in header:
        return {}
    pre = json.loads(header["preprocessing"])
    return {
        "resize": int(pre.get("resize", 0)),
        "crop_fraction": float(pre.get("crop_fraction", CROP_FRACTION)),
        "prepared_size": int(pre.get("prepared_size", PREPARED_SIZE)),
        "interpolation": str(pre.get("interpolation", INTERPOLATION)),
    }


def _problems(meta: CheckpointMeta) -> list[str]:
    """What is wrong with validly typed metadata (empty: nothing)."""
    problems = []
    if meta.arch not in ARCHS:
        problems.append(f"unknown arch {meta.arch!r}")
    try:
        check_backbone_name(meta.backbone)
    except AttnMelError:
        problems.append(f"unknown backbone {meta.backbone!r}")
    if len(meta.strides) != 3 or list(meta.strides) != sorted(set(meta.strides)):
        problems.append(f"strides {list(meta.strides)} are not three increasing strides")
    if not 0 < meta.crop_fraction <= 1:
        problems.append(f"crop_fraction {meta.crop_fraction} outside (0, 1]")
    if meta.interpolation != INTERPOLATION:
        problems.append(f"interpolation {meta.interpolation!r} unsupported (only bilinear)")
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


def save_checkpoint(
    path: str | Path, model: AttnMelNet, meta: CheckpointMeta, *, overwrite: bool = True
) -> Path:
    """Save ``model``'s weights with ``meta`` as one attnmel checkpoint."""
    state = {k: v.clone() for k, v in model.state_dict().items()}  # untie shared storage
    return write_tensors(path, state, meta.to_header(), overwrite=overwrite)


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


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[AttnMelNet, CheckpointMeta]:
    """Validate, build the model the metadata describes, load the tensors strictly; eval mode."""
    from attnmel_cli.models.registry import model_from_meta

    path = Path(path)
    tensors, header = read_tensors(path)
    meta = CheckpointMeta.from_header(path, header)
    model = model_from_meta(meta)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what} {names[0]}{f' (+{len(names) - 1} more)' if len(names) > 1 else ''}"
            for what, names in (
                ("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)
            )
            if names
        )
        raise CheckpointError(
            f"{path}: tensors do not match its metadata (arch={meta.arch}, "
            f"backbone={meta.backbone}, width={meta.width}): {detail}"
        )
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), meta
