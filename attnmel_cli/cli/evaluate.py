"""``attnmel evaluate``: AP and AUC with intervals, operating points, calibration, Jaccard."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from attnmel_cli.cli.console import err, log, progress, report_failure
from attnmel_cli.cli.early import checked_checkpoint
from attnmel_cli.cli.options import (
    AmpOpt,
    BatchOpt,
    CheckpointOpt,
    DeviceOpt,
    ForceOpt,
    FormatOpt,
    MaxPixelsOpt,
    TtaOpt,
    WorkersOpt,
)
from attnmel_cli.config import DEFAULT_MAX_PIXELS, torchrun_env
from attnmel_cli.errors import EXIT_OK, EXIT_PARTIAL
from attnmel_cli.io.atomic import ensure_dir, refuse_unless_forced
from attnmel_cli.io.records import check_format
from attnmel_cli.parallel import scoring_workers

if TYPE_CHECKING:
    from attnmel_cli.evaluation.results import EvalData, Evaluation


def evaluate(
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d",
            help="Prepared dir, or labelled data never prepared (ISIC download, class folders, "
            "image,label CSV).",
        ),
    ],
    checkpoint: CheckpointOpt = None,
    split: Annotated[
        str | None,
        typer.Option(help="Split to evaluate: train, val or test (default: test when the data "
                     "has one, else val; data without splits: all)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o",
            help="Write predictions.csv, report.json, roc.png, pr.png, reliability.png and "
            "report.html here (and roc_classes.png, pr_classes.png and confusion_matrix.png "
            "for a multi-class checkpoint).",
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", metavar="FILE",
            help="Write the report as one self-contained HTML file (metrics, curves, a gallery "
            "of the worst errors with their attention maps, every image in a sortable table).",
        ),
    ] = None,
    gallery: Annotated[
        int,
        typer.Option(
            min=0, max=50,
            help="Images in each gallery section of the HTML report (worst errors, most "
            "confident correct calls); at most 50.",
        ),
    ] = 12,
    threshold: Annotated[
        str,
        typer.Option(help="Threshold on p_melanoma, or 'val': Youden's J on the val split. An "
                     "image is called melanoma when p_melanoma >= threshold (the ISIC scorer: "
                     "p > 0.5; the report counts the images scored exactly at the threshold)."),
    ] = "0.5",
    fmt: FormatOpt = None,
    compare: Annotated[
        list[Path] | None,
        typer.Option(
            "--compare",
            help="Another checkpoint, side by side, with DeLong's test of its AUC against the "
            "first (repeatable).",
        ),
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="Layout of data never prepared (auto detects it).")
    ] = "auto",
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples for the 95 % intervals (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    force: ForceOpt = False,
    amp: AmpOpt = True,
    tta: TtaOpt = False,
) -> None:
    """AP and AUC with 95 % intervals, operating points, calibration, attention Jaccard, and
    every figure of the ISIC challenge scorer.

    Every checkpoint: p_melanoma against the melanoma label. A multi-class checkpoint adds
    per-class figures (the true class: each image's diagnosis) and, with the melanoma and
    seborrheic_keratosis classes, the ISIC 2017 Part 3 mean AUC. Ground truth rows of
    score_weight 0 (ISIC 2019) are left out, as the ISIC scorer leaves them out.

    --format: table (the default; on stderr), json (the report on stdout), csv or jsonl (one
    record per image and checkpoint on stdout).

    Under ``torchrun --nproc_per_node N -m attnmel_cli evaluate …`` the processes share the
    scoring and rank 0 writes the report.
    """
    fmt = check_format(fmt or "table")

    def setup() -> tuple[Any, ...]:  # on rank 0 only under torchrun
        return _setup(data, split, dataset, out, threshold, force, checkpoint, compare, html)

    # Outside torchrun the options and the data are checked before torch loads.
    checked = None if torchrun_env() is not None else setup()
    from attnmel_cli.engine.distributed import process_group  # lazy: torch
    from attnmel_cli.engine.scored import ScoringOptions
    from attnmel_cli.evaluation.report import run_evaluation  # lazy: scikit-learn loads slowly

    options = ScoringOptions(batch_size=batch_size, max_pixels=max_pixels, amp=amp, tta=tta)

    # Under torchrun every process scores a block of the images; rank 0 writes the report.
    with process_group(device) as (dist, dev):
        cut, eval_data, val_data, checkpoints = checked or dist.on_main(setup)
        lo, hi = dist.bounds(len(eval_data.items))
        with progress(dist.is_main) as bar:
            task = bar.add_task("evaluating", total=(hi - lo) * len(checkpoints))
            result = run_evaluation(
                eval_data, checkpoints, dev, options.but(
                    workers=scoring_workers(workers, dist.local_world),
                ), threshold=cut, val_data=val_data, n_boot=bootstrap, seed=seed,
                advance=lambda: bar.advance(task), dist=dist,
            )
    if not dist.is_main:
        raise typer.Exit(EXIT_OK)
    _render(result, out, fmt, force)
    pages = [p for p in (html, out and out / "report.html") if p is not None]
    if pages:
        from attnmel_cli.evaluation.html_report import write_html_report

        write_html_report(
            result, eval_data, pages, dev, gallery=gallery,
            # a few dozen images: decoded in this process unless --workers says otherwise
            options=options.but(workers=0 if workers is None else workers), overwrite=force,
        )
        log.info("wrote the HTML report to %s", ", ".join(map(str, pages)))
    raise typer.Exit(EXIT_PARTIAL if result.report.failed else EXIT_OK)


def _setup(
    data: Path, split: str | None, dataset: str, out: Path | None, threshold: str, force: bool,
    checkpoint: Path | None, compare: list[Path] | None, html: Path | None,
) -> tuple[float | None, EvalData, EvalData | None, list[Path]]:
    """Check the options and read the data: the threshold (None: chosen on val), the images to
    evaluate, the val split when needed, and the checkpoints (their metadata validated). No
    torch: this runs before it loads."""
    from attnmel_cli.evaluation.inputs import load_data, load_val_data
    from attnmel_cli.evaluation.outputs import check_outputs, parse_threshold

    cut = parse_threshold(threshold)
    checkpoints = [checked_checkpoint(checkpoint), *map(checked_checkpoint, compare or [])]
    if out is not None:
        check_outputs(out, overwrite=force)
    if html is not None:
        refuse_unless_forced(html if html.exists() else None, force=force)
        ensure_dir(html.parent)
    eval_data = load_data(data, split, dataset)
    if split is None and eval_data.split is not None:
        log.info("evaluating split %r (no --split given)", eval_data.split)
    val_data = load_val_data(data, dataset) if cut is None else None
    return cut, eval_data, val_data, checkpoints


def _render(result: Evaluation, out: Path | None, fmt: str, force: bool) -> None:
    """Failed images on stderr, the files in ``out``, the report as JSON (stdout) or a table."""
    from attnmel_cli.cli.render import class_tables, report_table
    from attnmel_cli.evaluation.rendering import stdout_text, write_outputs

    report = result.report
    for failure in report.failed:
        report_failure(failure.path, failure.error)
    for rep in report.checkpoints:  # the table's title says it otherwise
        overlap = rep.training_overlap
        if overlap is None:
            continue
        if overlap.trained_on_evaluated_images and fmt != "table":
            log.warning("%s", overlap.sentence(rep.name))
        elif not overlap.known:
            log.info("%s records no training image ids: whether it trained on some of these "
                     "images is unknown (scripts/record_train_ids.py adds them)", rep.name)
    if report.score_weight_zero:
        log.info("left out %d images of score_weight 0", report.score_weight_zero)
    for rep in report.checkpoints:
        if rep.classes_skipped is not None:
            log.warning("%s: no per-class figures: %s", rep.name, rep.classes_skipped)
    if out is not None:
        write_outputs(result, out, overwrite=force)
        log.info("wrote predictions.csv, report.json and plots to %s", out)
    if fmt == "table":
        err.print(report_table(report), *class_tables(report))
    else:
        typer.echo(stdout_text(result, fmt), nl=False)
