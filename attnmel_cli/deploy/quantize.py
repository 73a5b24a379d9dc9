"""``attnmel export --int8``: static int8 quantisation of an exported fp32 model with ONNX
Runtime's tools (QDQ format, per-channel int8 weights, uint8 activations), its activation ranges
calibrated on prepared *training* images, never on images a model is evaluated on."""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.manifest import read_manifest
from attnmel_cli.data.transforms import prepared_to_array
from attnmel_cli.deploy.export import save_checked, set_metadata
from attnmel_cli.deploy.onnx_deps import INPUT_NAME, PRECISION_KEY, require
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.io.checkpoint import CheckpointMeta

CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 16


def calibration_images(prepared_dir: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` training images of the prepared dir (all when fewer), drawn with ``seed``."""
    rows = read_manifest(prepared_dir, split="train")
    if not rows:
        raise DataError(f"{prepared_dir}: no training images to calibrate on (split 'train')")
    picked = sorted(random.Random(seed).sample(rows, min(count, len(rows))),
                    key=lambda r: r.image_id)
    return [prepared_dir / r.image for r in picked]


def calibration_batches(
    paths: Sequence[Path], meta: CheckpointMeta, batch: int = CALIBRATION_BATCH
) -> Iterator[dict[str, np.ndarray]]:
    """Network inputs {input: (n, 3, S, S)} of the prepared images, as scoring preprocesses them."""
    for start in range(0, len(paths), batch):
        arrays = [prepared_to_array(load_photo(p), meta.preprocess)
                  for p in paths[start:start + batch]]
        yield {INPUT_NAME: np.stack(arrays)}


def quantize_int8(
    fp32_model: Path, out: Path, prepared_dir: Path, *, images: int = CALIBRATION_IMAGES,
    keep_float: Sequence[str] = (), seed: int = 0, overwrite: bool = False,
) -> Path:
    """Write the static int8 (QDQ) version of the fp32 ONNX model ``fp32_model`` at ``out``;
    the nodes whose name contains one of ``keep_float`` stay in float (the layers int8 hurts)."""
    onnx = require("onnx")
    quant = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32_model))
    props = {p.key: p.value for p in model.metadata_props}
    meta = CheckpointMeta.from_header(fp32_model, props)
    paths = calibration_images(prepared_dir, images, seed)

    class Reader(quant.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.batches = calibration_batches(paths, meta)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="attnmel-int8-") as folder:
        prepared, quantized = Path(folder) / "pre.onnx", Path(folder) / "int8.onnx"
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=True)
        names = [n.name for n in onnx.load(str(prepared)).graph.node]
        kept = [n for n in names if any(k in n for k in keep_float)]
        unmatched = [k for k in keep_float if not any(k in n for n in names)]
        if unmatched:
            raise AttnMelError(f"--keep-float {unmatched[0]!r} matches no node of the model")
        root = logging.getLogger()  # the quantiser logs every rescaled channel there
        level = root.level
        root.setLevel(level if level <= logging.DEBUG else logging.ERROR)  # shown with -v
        try:
            quant.quantize_static(
                str(prepared), str(quantized), Reader(), quant_format=quant.QuantFormat.QDQ,
                per_channel=True, activation_type=quant.QuantType.QUInt8,
                weight_type=quant.QuantType.QInt8,
                calibrate_method=quant.CalibrationMethod.MinMax, nodes_to_exclude=kept,
            )
        finally:
            root.setLevel(level)
        result = onnx.load(str(quantized))
    props.update({
        PRECISION_KEY: "int8",
        "int8_calibration": json.dumps({
            "images": len(paths), "split": "train", "prepared_dir": prepared_dir.name,
            "seed": seed, "method": "minmax", "format": "QDQ", "per_channel": True,
            "kept_float": list(keep_float), "float_nodes": len(kept),
        }),
    })
    result.producer_name, result.producer_version = model.producer_name, model.producer_version
    result.doc_string = model.doc_string + " (int8)"
    set_metadata(result, props)
    return save_checked(result, out, overwrite=overwrite)
