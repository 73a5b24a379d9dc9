"""The optional ``onnx``/``onnxruntime`` packages (the ``onnx`` extra), and what an
ONNX model file is to attnmel."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from attnmel_cli.errors import AttnMelError

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
