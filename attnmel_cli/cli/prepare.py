"""``attnmel prepare``: check a labelled dataset, then write the prepared dir."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from attnmel_cli.cli.console import err, log, progress
from attnmel_cli.cli.options import MaxPixelsOpt, WorkersOpt
from attnmel_cli.config import (
    CROP_FRACTION,
    DEFAULT_MAX_PIXELS,
    PREPARE_SEED,
    PREPARE_VAL_FRACTION,
    refuse,
)
from attnmel_cli.io.safe_text import printable

if TYPE_CHECKING:
    from rich.progress import TaskID
    from rich.table import Table

    from attnmel_cli.data.prepare import PrepareResult


def prepare(
    source: Annotated[
        Path,
        typer.Argument(help="ISIC download, class folders, or a folder with an image,label CSV."),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Prepared dir to write (manifest.csv, images, masks)."),
    ],
    dataset: Annotated[
        str,
        typer.Option(help="Source layout: auto, isic2016, isic2017, isic2018, ham10000, isic2019, "
                     "isic2020, folder or csv."),
    ] = "auto",
    val_fraction: Annotated[
        float,
        typer.Option(min=0.0, help="Share of train carved into a stratified val split when the "
                     "source has none (0: none)."),
    ] = PREPARE_VAL_FRACTION,
    seed: Annotated[int, typer.Option(help="Seed of the val split carve.")] = PREPARE_SEED,
    workers: WorkersOpt = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into an --out holding another dataset or other files."),
    ] = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    crop_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Side of the square centre crop as a share of the "
                     "photo's shorter side (the paper: 0.8; 1: the whole square). Models "
                     "trained on the dir crop photos the same way (it is in their checkpoint)."),
    ] = CROP_FRACTION,
) -> None:
    """Check a labelled dataset, then write it preprocessed (paper crop, 256×256) with its masks."""
    from attnmel_cli.data.prepare import prepare_dataset  # lazy: numpy, Pillow (never torch)

    refuse("prepare")
    with progress() as bar:
        tasks: dict[str, TaskID] = {}

        def show(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = prepare_dataset(
            source, out, dataset=dataset, val_fraction=val_fraction, seed=seed, workers=workers,
            force=force, progress=show, max_pixels=max_pixels, crop_fraction=crop_fraction,
        )
    for folder, count in result.ignored.items():
        log.info("ignored %d unlabelled images in %s", count, folder)
    err.print(summary_table(result))
    if result.lesions:
        log.info("%d lesions: every carved split and fold keeps a lesion's photographs on one "
                 "side", result.lesions)
    note = result.resolution.note(crop_fraction) if result.resolution else None
    if note:
        log.info("%s", note)
    log.info(
        "prepared %d images (%d written, %d already done) in %.1f s",
        result.written + result.skipped, result.written, result.skipped, result.seconds,
    )


def summary_table(result: PrepareResult) -> Table:
    """The prepared dir per split, as a Rich table for stderr."""
    from rich.table import Table

    table = Table(
        title=f"{printable(result.out)} · {result.layout}"
        + (" · val carved from train" if result.carved_val else "")
    )
    for name in ("split", "images", "melanoma", "lesion masks", "dermo maps"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for split, c in result.counts.items():
        table.add_row(split, str(c.images), str(c.melanoma), str(c.lesion_masks), str(c.dermo_maps))
    return table
