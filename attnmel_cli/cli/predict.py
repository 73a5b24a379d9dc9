"""``attnmel predict``: score images, one record per image on stdout, in input order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from attnmel_cli.cli.console import log, progress, report_failure
from attnmel_cli.cli.early import checked_checkpoint
from attnmel_cli.cli.options import (
    AmpOpt,
    BatchOpt,
    CheckpointOpt,
    DeviceOpt,
    ForceOpt,
    FormatOpt,
    MaxPixelsOpt,
    PathsArg,
    RecursiveOpt,
    ShardOpt,
    TtaOpt,
    WorkersOpt,
)
from attnmel_cli.config import DEFAULT_MAX_PIXELS, torchrun_env
from attnmel_cli.deploy.onnx_deps import is_onnx
from attnmel_cli.deploy.session import load_session, onnx_copy
from attnmel_cli.errors import EXIT_OK, EXIT_PARTIAL
from attnmel_cli.io.default_model import default_checkpoint, resolve_checkpoint
from attnmel_cli.io.records import RecordWriter, check_format, default_format, record
from attnmel_cli.parallel import scoring_workers

if TYPE_CHECKING:
    from attnmel_cli.cli.scoring import Row
    from attnmel_cli.engine.distributed import Dist
    from attnmel_cli.engine.scored import ScoringOptions, ScoringSession


def predict(
    paths: PathsArg,
    checkpoint: CheckpointOpt = None,
    recursive: RecursiveOpt = False,
    fmt: FormatOpt = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0,
            help="Predict melanoma when p_melanoma ≥ this (binary checkpoints: prediction "
            "melanoma, else other; "
            "default 0.5). A multi-class checkpoint predicts its most probable class, or with "
            "this option melanoma when p_melanoma ≥ it and otherwise the most probable other "
            "class.",
        ),
    ] = None,
    overlay: Annotated[
        Path | None,
        typer.Option(help="Write the attention overlay of the single input image here."),
    ] = None,
    overlay_dir: Annotated[
        Path | None,
        typer.Option(help="Write one attention overlay per image into this folder."),
    ] = None,
    overlay_map: Annotated[
        str,
        typer.Option(help="Map drawn in overlays: pool4, pool3 (attnmel) or cam (vgg16-gap)."),
    ] = "auto",
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    force: ForceOpt = False,
    shard_spec: ShardOpt = None,
    amp: AmpOpt = True,
    tta: TtaOpt = False,
) -> None:
    """Score images: one record per image on stdout (path, p_melanoma, prediction, checkpoint;
    a multi-class checkpoint adds p_<class> for each class), by default a table on a terminal
    and CSV when piped.

    Under ``torchrun --nproc_per_node N -m attnmel_cli predict …`` each process scores a block of
    the inputs and rank 0 writes all the records, in input order. An ``.onnx`` checkpoint (from
    ``attnmel export``) is scored by ONNX Runtime in one process, without importing torch; so is
    a checkpoint with its export beside it (the shipped models, with or without --checkpoint)
    where onnxruntime is installed (on the CPU or a GPU ONNX Runtime can use). The checkpoint
    column names the file that scored.
    """
    if fmt is not None:
        check_format(fmt)
    # the checkpoint's (or the default model's) ONNX export where ONNX Runtime serves
    checkpoint = onnx_copy(checkpoint, device) or checkpoint
    from attnmel_cli.engine.scored import ScoringOptions  # lazy: numpy, Pillow (no torch)

    request = Request(
        paths, checkpoint, recursive, fmt, threshold, overlay, overlay_dir, overlay_map, force,
        shard_spec, ScoringOptions(batch_size=batch_size, workers=workers,
                                   max_pixels=max_pixels, amp=amp, tta=tta),
    )
    if is_onnx(checkpoint if checkpoint is not None else default_checkpoint()):
        _predict(None, lambda path: load_session(path, device), request)  # one process, no torch
        return
    if torchrun_env() is None:  # a bad checkpoint is reported before torch loads
        checked_checkpoint(checkpoint)
    from attnmel_cli.engine.distributed import process_group  # lazy: torch

    with process_group(device) as (dist, dev):
        _predict(dist, lambda path: load_session(path, dev), request)


@dataclass(frozen=True)
class Request:
    """What ``predict`` was asked for: the inputs, the checkpoint (None: the default model),
    the records and overlays to write, and how to score."""

    paths: list[str]
    checkpoint: Path | None
    recursive: bool
    fmt: str | None
    threshold: float | None
    overlay: Path | None
    overlay_dir: Path | None
    overlay_map: str
    force: bool
    shard_spec: str | None
    scoring: ScoringOptions


def _predict(
    dist: Dist | None, load: Callable[[Path], ScoringSession], request: Request
) -> None:
    """Carry out ``request``; ``dist``: this process's place under torchrun (None: ONNX
    Runtime, one process)."""
    from attnmel_cli.cli.render import show_records
    from attnmel_cli.cli.scoring import predict_rows  # lazy: numpy, Pillow, OpenCV…
    from attnmel_cli.data.image_files import collect_inputs
    from attnmel_cli.viz.overlay import check_overlay_options, overlay_map_name

    r = request
    fmt, threshold = r.fmt or default_format(), r.threshold
    overlay, overlay_dir = r.overlay, r.overlay_dir
    is_main = dist is None or dist.is_main

    def setup() -> tuple[list[str], Path]:  # on rank 0 only under torchrun (reads stdin)
        check_format(fmt)
        inputs = collect_inputs(r.paths, r.recursive, r.shard_spec)
        check_overlay_options(inputs, overlay, overlay_dir, r.force)
        return inputs, resolve_checkpoint(r.checkpoint)

    inputs, checkpoint_path = dist.on_main(setup) if dist is not None else setup()
    session = load(checkpoint_path)
    map_name = (
        overlay_map_name(session, r.overlay_map)
        if overlay is not None or overlay_dir is not None else None
    )
    # This process's block (all of them outside torchrun).
    lo, hi = dist.bounds(len(inputs)) if dist is not None else (0, len(inputs))
    options = r.scoring.but(
        workers=scoring_workers(r.scoring.workers, dist.local_world if dist is not None else 1)
    )

    def results() -> Iterator[Row]:
        with progress(is_main) as bar:
            task = bar.add_task("scoring", total=hi - lo)
            yield from predict_rows(
                session, inputs, (lo, hi), options, overlay=overlay, overlay_dir=overlay_dir,
                map_name=map_name, force=r.force, threshold=threshold,
                advance=lambda: bar.advance(task),
            )

    # One process streams its records; under torchrun rank 0 gathers every block, in order.
    rows = dist.collect(results()) if dist is not None else results()
    if not is_main:
        raise typer.Exit(EXIT_OK)
    classes = session.meta.classes
    writer, failed = RecordWriter(fmt, classes=classes, show_table=show_records), 0
    for path, p, probs, error in rows:
        if error is not None:
            failed += 1
            report_failure(path, error)
        writer.write(record(path, p, threshold, session.name, error, classes=classes, probs=probs))
    writer.close()
    log.info("scored %d of %d images with %s", len(inputs) - failed, len(inputs), session.name)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)
