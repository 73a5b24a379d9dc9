"""``attnmel explain``: attention maps (or the CAM) over each photo, at the photo's own size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnmel_cli.cli.console import log, progress, report_failure
from attnmel_cli.cli.early import checked_checkpoint
from attnmel_cli.cli.options import (
    AmpOpt,
    BatchOpt,
    CheckpointOpt,
    DeviceOpt,
    ForceOpt,
    MaxPixelsOpt,
    PathsArg,
    RecursiveOpt,
    ShardOpt,
    TtaOpt,
    WorkersOpt,
)
from attnmel_cli.config import DEFAULT_MAX_PIXELS, refuse
from attnmel_cli.deploy.onnx_deps import is_onnx
from attnmel_cli.deploy.session import onnx_copy
from attnmel_cli.errors import EXIT_OK, EXIT_PARTIAL
from attnmel_cli.io.atomic import ensure_dir
from attnmel_cli.io.default_model import default_checkpoint


def explain(
    paths: PathsArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for overlays, composites and raw maps.")
    ],
    checkpoint: CheckpointOpt = None,
    recursive: RecursiveOpt = False,
    batch_size: BatchOpt = 8,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    force: ForceOpt = False,
    shard_spec: ShardOpt = None,
    amp: AmpOpt = True,
    tta: TtaOpt = False,
) -> None:
    """Write, per image, the attention maps (CAM for vgg16-gap) over the photo at its own size
    (an ``.onnx`` checkpoint from ``attnmel export`` is run by ONNX Runtime, without torch; so is
    a checkpoint with its export beside it, as the shipped models, where onnxruntime is
    installed)."""
    # the checkpoint's (or the default model's) ONNX export where ONNX Runtime serves
    checkpoint = onnx_copy(checkpoint, device) or checkpoint
    if not is_onnx(checkpoint if checkpoint is not None else default_checkpoint()):
        refuse("explain", "split the inputs with --shard I/N instead (one job per shard)")
    checkpoint = checked_checkpoint(checkpoint)  # before torch loads
    from attnmel_cli.data.image_files import collect_inputs  # lazy: numpy, Pillow, OpenCV…
    from attnmel_cli.deploy.session import load_session
    from attnmel_cli.engine.scored import ScoringOptions
    from attnmel_cli.viz.explain import check_explainable, explain_paths

    inputs = collect_inputs(paths, recursive, shard_spec)
    ensure_dir(out)  # a folder that cannot be written fails now, not once per image
    session = load_session(checkpoint, device)
    check_explainable(session)
    failed = 0
    with progress() as bar:
        task = bar.add_task("explaining", total=len(inputs))
        for done in explain_paths(session, inputs, out, ScoringOptions(
            batch_size=batch_size, workers=workers, max_pixels=max_pixels, amp=amp, tta=tta,
        ), force=force):
            if done.error is not None:
                failed += 1
                report_failure(done.path, done.error)
            else:
                typer.echo(f"{done.path}\t{done.p_melanoma:.6f}\t{done.composite}")
            bar.advance(task)
    log.info("explained %d of %d images into %s", len(inputs) - failed, len(inputs), out)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)
