"""``attnmel export``: a checkpoint as an ONNX model (fp32, or int8 calibrated on training
images)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from attnmel_cli.cli.console import log
from attnmel_cli.cli.options import ForceOpt
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import refuse_unless_forced
from attnmel_cli.io.checkpoint import read_metadata

# What int8 cost the default model, measured by bench/bench_deploy.py (see README).
INT8_LOSS = ("every layer in int8 cost the default model 0.008 AUC on ISIC 2017 val and 0.029 on "
             "the ISIC 2016 photos, and was no faster end to end")


def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="attnmel .safetensors checkpoint.", metavar="CKPT")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX model to write (.onnx).")],
    int8: Annotated[
        bool,
        typer.Option("--int8/--fp32",
                     help="Experimental static int8 quantisation (QDQ, per-channel weights); "
                     "needs --calibrate. fp32 ONNX (the default) is the recommended fast path: "
                     f"{INT8_LOSS}."),
    ] = False,
    calibrate: Annotated[
        Path | None,
        typer.Option(metavar="PREPARED_DIR",
                     help="Prepared dir whose training images calibrate the int8 ranges."),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option(min=1, help="Training images drawn for calibration.")
    ] = 300,
    keep_float: Annotated[
        str,
        typer.Option(metavar="NAME,…",
                     help="With --int8: leave the nodes whose ONNX name contains one of these in "
                     "float (e.g. blocks.0/,blocks.2/,blocks.5/ for the default model)."),
    ] = "",
    force: ForceOpt = False,
) -> None:
    """Write the checkpoint's model as ONNX: input a float batch (N, 3, S, S), outputs the logits
    and the attention maps (or CAM); the checkpoint's metadata goes into the model's metadata.
    Prints the written path on stdout."""
    if int8 != (calibrate is not None):
        raise AttnMelError("--int8 and --calibrate PREPARED_DIR go together")
    refuse_unless_forced(out if out.exists() else None, force=force)
    read_metadata(checkpoint)  # a missing or foreign file: one line, before torch loads
    if int8:
        log.warning("--int8 is experimental (%s); fp32 ONNX is the recommended fast path",
                    INT8_LOSS)
    from attnmel_cli.deploy.export import export_onnx  # lazy: torch, onnx
    from attnmel_cli.deploy.quantize import quantize_int8
    if not int8:
        export_onnx(checkpoint, out, overwrite=force)
    else:
        with tempfile.TemporaryDirectory(prefix="attnmel-export-") as folder:
            fp32 = export_onnx(checkpoint, Path(folder) / "fp32.onnx")
            quantize_int8(fp32, out, calibrate, images=calibration_images,  # type: ignore[arg-type]
                          keep_float=[k for k in keep_float.split(",") if k], overwrite=force)
    log.info("wrote %s (%s) from %s", out, "int8" if int8 else "fp32", checkpoint)
    typer.echo(out)
