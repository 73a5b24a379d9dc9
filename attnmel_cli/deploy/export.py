"""``attnmel export``: a checkpoint as an ONNX model (any arch, any backbone).

The model takes ``input``, a float batch (N, 3, S, S) preprocessed as the checkpoint says (N
dynamic), and returns ``logits`` (N, K) and the variant's maps, each (N, 1, h, w): ``pool3`` and
``pool4`` attention (attnmel) or ``cam`` (vgg16-gap). Its metadata properties hold the
checkpoint's whole header (arch, backbone, classes, preprocessing, metrics, training options…)
plus what the ONNX file adds (:data:`ONNX_KEYS`), so the file alone is enough to score.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnmel_cli import __version__
from attnmel_cli.deploy.onnx_deps import (
    INPUT_NAME,
    LOGITS_NAME,
    OUTPUTS_KEY,
    PRECISION_KEY,
    require,
)
from attnmel_cli.deploy.onnx_digest import digest_file, write_digest
from attnmel_cli.engine.scored import map_names
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import atomic_path, refuse_unless_forced
from attnmel_cli.io.checkpoint import read_header
from attnmel_cli.io.digest import file_sha256
from attnmel_cli.io.model_checkpoint import load_checkpoint
from attnmel_cli.io.records import DEFAULT_THRESHOLD
from attnmel_cli.models.names import is_binary

OPSET = 17
ONNX_KEYS = {
    PRECISION_KEY: "fp32, or int8 (static QDQ quantisation)",
    OUTPUTS_KEY: "the output names, logits first",
    "source_checkpoint": "file name of the exported checkpoint",
    "source_sha256": "SHA-256 of the exported checkpoint file (ties the model to it)",
    "threshold": "decision threshold on p_melanoma (predict's default; binary models only)",
}


class _Outputs(nn.Module):
    """The network with its outputs as a flat tuple: logits, then each map by name."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        logits, maps = self.model(x)
        return (logits, *(maps[n] for n in self.names))


def set_metadata(model: Any, props: dict[str, str]) -> None:
    """Replace an ONNX ModelProto's metadata properties with ``props``."""
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def save_checked(model: Any, target: Path, *, overwrite: bool) -> Path:
    """Validate an ONNX ModelProto with ``onnx.checker`` and write it atomically, its SHA-256
    beside it (``MODEL.onnx.sha256``: scoring refuses a file changed since)."""
    onnx = require("onnx")
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(target, overwrite=overwrite) as tmp:
        onnx.save(model, str(tmp))
        digest_file(target).unlink(missing_ok=True)  # never a stale digest beside a new model
    write_digest(target)
    return target


def export_onnx(
    checkpoint: Path, out: Path, *, overwrite: bool = False, opset: int = OPSET
) -> Path:
    """Write ``checkpoint``'s model as an fp32 ONNX model at ``out`` (atomically, validated)."""
    onnx = require("onnx")
    refuse_unless_forced(out if out.exists() else None, force=overwrite)  # before the work
    model, meta = load_checkpoint(checkpoint)
    names = map_names(meta)
    outputs = [LOGITS_NAME, *names]
    props = dict(read_header(checkpoint))  # the whole header: new keys travel too
    if is_binary(meta.classes):  # a multi-class model predicts its most probable class
        props.setdefault("threshold", str(DEFAULT_THRESHOLD))
    props.update({PRECISION_KEY: "fp32", OUTPUTS_KEY: json.dumps(outputs),
                  "source_checkpoint": checkpoint.name, "source_sha256": file_sha256(checkpoint)})
    x = torch.zeros(2, 3, meta.image_size, meta.image_size)  # N = 2: nothing specialises on 1
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # tracer notes on the size checks; the input size is fixed
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                _Outputs(model, names), (x,), buffer, input_names=[INPUT_NAME],
                output_names=outputs, opset_version=opset, dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *outputs)},
            )
        except RuntimeError as exc:  # an operator ONNX cannot express at this input size
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AttnMelError(f"{checkpoint}: cannot export {meta.arch} on {meta.backbone} at "
                               f"{meta.image_size} px to ONNX ({reason})") from None
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name, proto.producer_version = "attnmel", __version__
    proto.doc_string = f"attnmel {meta.arch} on {meta.backbone}, exported from {checkpoint.name}"
    set_metadata(proto, props)
    return save_checked(proto, out, overwrite=overwrite)
