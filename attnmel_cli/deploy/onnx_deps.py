"""The optional ``onnx``/``onnxruntime`` packages (the ``onnx`` extra), what an ONNX model
file is to attnmel, and whether ONNX Runtime can serve a device."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

from attnmel_cli.errors import AttnMelError

log = logging.getLogger("attnmel")

ONNX_SUFFIX = ".onnx"
INPUT_NAME = "input"  # the float batch (N, 3, S, S), N dynamic
LOGITS_NAME = "logits"  # (N, K); the maps follow under their own names (pool3, pool4, cam)
PRECISION_KEY = "onnx_precision"  # metadata: fp32 or int8
OUTPUTS_KEY = "onnx_outputs"  # metadata: JSON list of the output names


def is_onnx(path: str | Path | None) -> bool:
    """Whether ``path`` names an ONNX model (by its suffix) rather than an attnmel checkpoint."""
    return path is not None and Path(path).suffix.lower() == ONNX_SUFFIX


def require(module: str) -> ModuleType:
    """Import ``module`` (onnx, onnxruntime, onnxruntime.quantization), or a one-line error
    naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AttnMelError(
            f"{module} is not installed; ONNX export and scoring need the onnx extra: "
            "`pip install onnx onnxruntime` (or, in an attnmel checkout, `pip install '.[onnx]'`)"
        ) from None


def gpu_present() -> bool:
    """Whether PyTorch's ``auto`` device is likely a GPU, judged without importing torch: an
    NVIDIA driver with GPUs (not hidden by an empty ``CUDA_VISIBLE_DEVICES``), AMD's ROCm, or
    Apple silicon (MPS)."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    if sys.platform != "linux":
        return shutil.which("nvidia-smi") is not None
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/kfd").exists()


def runtime_serves(device: str) -> bool:
    """Whether ONNX Runtime (and onnx, which reads the graph to check it) is installed and runs
    a model on ``device`` where PyTorch would:
    ``cpu``; ``cuda[:N]`` with its CUDA provider (onnxruntime-gpu); ``auto`` with that provider,
    or where no GPU is present (:func:`gpu_present`). Any other device is PyTorch's."""
    try:
        ort = importlib.import_module("onnxruntime")
        if importlib.util.find_spec("onnx") is None:  # its checks read the graph with onnx
            raise ImportError("onnx is not installed")
    except (ImportError, OSError, ValueError, AttributeError) as exc:  # none, or a broken one
        log.debug("onnxruntime unavailable (%s): scoring with PyTorch", exc)
        return False
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return cuda or not gpu_present()
    return device == "cpu" or (cuda and (device == "cuda" or device.startswith("cuda:")))
