"""The resumable part of a training run, in ``RUN_DIR/last.state.safetensors`` (never pickled).

Optimiser, scheduler and grad-scaler state dicts, the sampler position, the RNG states, the best
validation AUC so far and the metrics history are split into tensors (stored as safetensors
tensors) and everything else (stored as JSON in the header). The model weights are not here:
they are ``last.safetensors``, an ordinary checkpoint written in the same epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnmel_cli.errors import CheckpointError
from attnmel_cli.io.checkpoint import read_tensors, write_tensors

STATE_FORMAT = "attnmel-train-state"
STATE_FORMAT_VERSION = 1
_TENSOR, _ITEMS = "__tensor__", "__items__"
WEIGHTS_PREFIX = "model/"  # the weights of the state's epoch, in the same file


def flatten(obj: Any, tensors: dict[str, Tensor], prefix: str = "") -> Any:
    """JSON-able copy of ``obj``; each tensor moves to ``tensors`` under a path-like key.

    Dicts with non-string keys (optimiser state is keyed by parameter index) become
    ``{"__items__": [[key, value], …]}`` so that the key types survive the round trip.
    """
    if isinstance(obj, Tensor):
        tensors[prefix] = obj
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten(v, tensors, f"{prefix}/{k}") for k, v in obj.items()}
        return {_ITEMS: [[k, flatten(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    return obj


def unflatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_ITEMS}:
            return {k: unflatten(v, tensors) for k, v in obj[_ITEMS]}
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


@dataclass
class RunState:
    """Everything besides the weights that a resumed run needs to continue bit for bit.

    ``epoch``: epochs completed; ``history``: one metrics row per completed epoch;
    ``rng``: ``torch`` (CPU generator state) and ``cuda`` (one state per device) uint8 tensors.
    """

    epoch: int
    best_auc: float
    best_epoch: int
    train_config: dict[str, Any]
    data_fingerprint: str
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    sampler: dict[str, int]
    history: list[dict[str, float]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    """The global CPU and CUDA generator states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the generators :func:`capture_rng` recorded (CUDA only when the device count matches)."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_run_state(path: Path, state: RunState, weights: dict[str, Tensor] | None = None) -> Path:
    """Write ``state`` atomically as tensors + JSON header.

    ``weights``: the model's state dict of the same epoch, stored under ``model/…`` so that the
    file alone resumes the run, whatever moment a kill interrupted the epoch's writes.
    """
    tensors: dict[str, Tensor] = {
        f"{WEIGHTS_PREFIX}{k}": v.clone() for k, v in (weights or {}).items()  # untie storage
    }
    body = {k: flatten(getattr(state, k), tensors, k) for k in state.__dataclass_fields__}
    header = {
        "format": STATE_FORMAT,
        "format_version": str(STATE_FORMAT_VERSION),
        "state": json.dumps(body),
    }
    return write_tensors(path, tensors, header)


def load_run_state(path: Path) -> RunState:
    """Read a state file written by :func:`save_run_state`; CheckpointError if it is not one."""
    tensors, header = read_tensors(path)
    if header.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an attnmel training-state file")
    if int(header.get("format_version", "0")) > STATE_FORMAT_VERSION:
        raise CheckpointError(f"{path}: training state from a newer attnmel; upgrade attnmel")
    try:
        body = json.loads(header["state"])
        return RunState(**{k: unflatten(v, tensors) for k, v in body.items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid training state ({exc!r})") from None


def load_state_weights(path: Path) -> dict[str, Tensor]:
    """The model weights saved with the state by :func:`save_run_state` ({} if it has none)."""
    tensors, _ = read_tensors(path)
    return {
        k.removeprefix(WEIGHTS_PREFIX): v
        for k, v in tensors.items()
        if k.startswith(WEIGHTS_PREFIX)
    }
