"""attnmel's command line: parse, call the core, render; map AttnMelError to exit codes.

Records go to stdout; progress bars, logs and errors go to stderr.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from attnmel_cli import __version__
from attnmel_cli.checkpoint import resolve_checkpoint
from attnmel_cli.distributed import Dist, from_env, process_group, refuse
from attnmel_cli.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, AttnMelError
from attnmel_cli.fsio import ensure_dir
from attnmel_cli.inference import default_workers, resolve_device
from attnmel_cli.predict import (
    Row,
    Session,
    check_overlay_options,
    expand_inputs,
    overlay_map_name,
    overlay_target,
    parse_shard,
    predict_rows,
    read_path_list,
    shard,
    write_explanation,
)
from attnmel_cli.prepare import (
    DEFAULT_SEED,
    DEFAULT_VAL_FRACTION,
    prepare_dataset,
    summary_table,
)
from attnmel_cli.preprocess import DEFAULT_MAX_PIXELS
from attnmel_cli.records import FORMATS, RecordWriter, default_format, record

app = typer.Typer(
    name="attnmel",
    help="Melanoma recognition via visual attention (Yan, Kawahara, Hamarneh, IPMI 2019).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("attnmel")
F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    import torch


def handle_errors(fn: F) -> F:
    """Turn AttnMelError into one line on stderr and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AttnMelError as exc:
            if not getattr(exc, "relayed", False):  # torchrun: rank 0 printed it already
                err.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except OSError as exc:  # the system refused (disk full, permissions…): one line, no trace
            if isinstance(exc, BrokenPipeError):  # stdout closed early (| head): as before
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            err.print(Text.assemble(("error:", "bold red"), " ", f"{where}{exc.strerror or exc}"),
                      highlight=False)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def progress(enabled: bool = True) -> Progress:
    """A Rich progress bar on stderr (silent when stderr is not a terminal or not ``enabled``)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not (enabled and err.is_terminal),
    )


def report_failure(path: str, message: str) -> None:
    """One line on stderr for an input that failed (the message already names the file)."""
    # Text, not markup: file names may hold "[/x]" or ":smile:"; control characters escaped so
    # that the line stays one line.
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")
    err.print(Text.assemble(("error:", "red"), " ", one_line), highlight=False)


def collect_inputs(paths: list[str], recursive: bool, shard_spec: str | None = None) -> list[str]:
    """Expand PATH arguments (``-`` reads paths from stdin, one per line); keep one shard."""
    items: list[str] = []
    for item in paths:
        items.extend(read_path_list(sys.stdin) if item == "-" else [item])
    inputs = list(expand_inputs(items, recursive=recursive))
    if not inputs:
        raise AttnMelError("no images to score (empty folder or empty list on stdin)")
    if shard_spec is not None:
        index, count = parse_shard(shard_spec)
        inputs = shard(inputs, index, count)
        log.info("shard %d/%d: %d images", index, count, len(inputs))
    return inputs


def print_version(value: bool) -> None:
    """``--version``: print and exit before any command is required."""
    if value:
        typer.echo(f"attnmel {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=print_version,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Melanoma recognition via visual attention."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="attnmel: %(message)s", stream=sys.stderr, force=True)
    # Pillow's two-line warnings about odd files: a file attnmel cannot use gets its own one-line
    # error instead (and -v shows them).
    if not verbose:
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c",
                 help="attnmel .safetensors checkpoint [default: the model in weights/]."),
]
PathsArg = Annotated[
    list[str],
    typer.Argument(help="Image files, folders, or - to read paths from stdin (one per line)."),
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Walk subfolders of folders.")
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", "-j", min=0, help="Decoding worker processes [default: cores - 1]."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda[:N] or mps.")
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option("--max-pixels", min=1,
                 help="Refuse images declaring more pixels (decompression bombs)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard", metavar="I/N",
        help="Process only the I-th of N contiguous blocks of the inputs (0-based); the outputs of "
        "shards 0…N-1 concatenated equal the unsharded output.",
    ),
]


@app.command()
@handle_errors
def predict(
    paths: PathsArg,
    checkpoint: CheckpointOpt = None,
    recursive: RecursiveOpt = False,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"Output: {'|'.join(FORMATS)} [default: table on a "
                     "terminal, csv when piped]."),
    ] = None,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Label 1 (melanoma) when p_melanoma ≥ this.")
    ] = 0.5,
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
    amp: Annotated[
        bool,
        typer.Option("--amp/--no-amp",
                     help="bf16 mixed precision on CUDA (faster; rounds the logits, so scores "
                     "may tie)."),
    ] = False,
) -> None:
    """Score images: one record per image on stdout (path, p_melanoma, label, checkpoint).

    Under ``torchrun --nproc_per_node N -m attnmel_cli predict …`` each process scores a block of
    the inputs and rank 0 writes all the records, in input order.
    """
    with process_group(device) as (dist, dev):
        _predict(dist, dev, paths, checkpoint, recursive, fmt, threshold, overlay, overlay_dir,
                 overlay_map, batch_size, workers, max_pixels, force, shard_spec, amp)


def _predict(
    dist: Dist, dev: torch.device, paths: list[str], checkpoint: Path | None, recursive: bool,
    fmt: str | None, threshold: float, overlay: Path | None, overlay_dir: Path | None,
    overlay_map: str, batch_size: int, workers: int | None, max_pixels: int, force: bool,
    shard_spec: str | None, amp: bool,
) -> None:
    fmt = fmt or default_format()

    def setup() -> tuple[list[str], Path]:  # on rank 0 only under torchrun (reads stdin)
        if fmt not in FORMATS:
            raise AttnMelError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
        inputs = collect_inputs(paths, recursive, shard_spec)
        check_overlay_options(inputs, overlay, overlay_dir, force)
        return inputs, resolve_checkpoint(checkpoint)

    inputs, checkpoint_path = dist.on_main(setup)
    session = Session.load(checkpoint_path, dev)
    map_name = (
        overlay_map_name(session, overlay_map)
        if overlay is not None or overlay_dir is not None else None
    )
    lo, hi = dist.bounds(len(inputs))  # this process's block (all of them outside torchrun)

    def results() -> Iterator[Row]:
        with progress(dist.is_main) as bar:
            task = bar.add_task("scoring", total=hi - lo)
            yield from predict_rows(
                session, inputs, (lo, hi), overlay=overlay, overlay_dir=overlay_dir,
                map_name=map_name, batch_size=batch_size,
                workers=dist.workers(default_workers()) if workers is None else workers,
                max_pixels=max_pixels, force=force, amp=amp,
                advance=lambda: bar.advance(task),
            )

    # One process streams its records; under torchrun rank 0 gathers every block, in order.
    rows = dist.gather(list(results())) if dist.enabled else results()
    if not dist.is_main:
        raise typer.Exit(EXIT_OK)
    writer, failed = RecordWriter(fmt), 0
    for path, p, error in rows:
        if error is not None:
            failed += 1
            report_failure(path, error)
        writer.write(record(path, p, threshold, session.name, error))
    writer.close()
    log.info("scored %d of %d images with %s", len(inputs) - failed, len(inputs), session.name)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


@app.command()
@handle_errors
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
) -> None:
    """Write, per image, the attention maps (CAM for vgg16-gap) over the photo at its own size."""
    refuse("explain", "split the inputs with --shard I/N instead (one job per shard)")
    inputs = collect_inputs(paths, recursive, shard_spec)
    ensure_dir(out)  # a folder that cannot be written fails now, not once per image
    session = Session.load(resolve_checkpoint(checkpoint), resolve_device(device))
    if not session.map_names():
        raise AttnMelError(
            f"{session.name}: a {session.meta.arch} checkpoint has neither attention maps nor a "
            "CAM; explain needs an attnmel or vgg16-gap checkpoint"
        )
    failed, taken = 0, set[str]()
    with progress() as bar:
        task = bar.add_task("explaining", total=len(inputs))
        for scored in session.score(
            inputs, batch_size=batch_size, workers=workers, keep_maps=True, max_pixels=max_pixels
        ):
            error = scored.error
            if error is None:
                target = overlay_target(scored.path, out, taken, suffix="")
                stem = target.name.removesuffix("_attention")
                try:
                    written = write_explanation(scored, session.meta, out, stem,
                                                max_pixels=max_pixels, overwrite=force)
                    log.debug("%s: wrote %s", scored.path, ", ".join(p.name for p in written))
                except AttnMelError as exc:
                    error = str(exc)
            if error is not None:
                failed += 1
                report_failure(scored.path, error)
            else:
                typer.echo(f"{scored.path}\t{scored.p_melanoma:.6f}\t{out / stem}_composite.png")
            bar.advance(task)
    log.info("explained %d of %d images into %s", len(inputs) - failed, len(inputs), out)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


@app.command()
@handle_errors
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
        str, typer.Option(help="Split to evaluate: train, val or test (data without splits: all).")
    ] = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o",
            help="Write predictions.csv, report.json, roc.png, pr.png and reliability.png here.",
        ),
    ] = None,
    threshold: Annotated[
        str,
        typer.Option(help="Threshold on p_melanoma, or 'val': Youden's J on the val split."),
    ] = "0.5",
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table (on stderr) or json (report on stdout).")
    ] = "table",
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
) -> None:
    """AP and AUC with 95 % intervals, operating points, calibration, attention Jaccard.

    Under ``torchrun --nproc_per_node N -m attnmel_cli evaluate …`` the processes share the
    scoring and rank 0 writes the report.
    """
    from attnmel_cli.evaluate import (  # lazy: scikit-learn and matplotlib load slowly
        check_outputs,
        load_data,
        load_val_data,
        parse_threshold,
        report_json,
        report_table,
        run_evaluation,
        write_outputs,
    )

    def setup() -> tuple[Any, ...]:  # on rank 0 only under torchrun
        if fmt not in ("table", "json"):
            raise AttnMelError(f"unknown --format {fmt!r}; choose table or json")
        cut = parse_threshold(threshold)
        if out is not None:
            check_outputs(out, overwrite=force)
        eval_data = load_data(data, split, dataset)
        val_data = load_val_data(data, dataset) if cut is None else None
        return cut, eval_data, val_data, [resolve_checkpoint(checkpoint), *(compare or [])]

    # Under torchrun every process scores a block of the images; rank 0 writes the report.
    with process_group(device) as (dist, dev):
        cut, eval_data, val_data, checkpoints = dist.on_main(setup)
        lo, hi = dist.bounds(len(eval_data.items))
        with progress(dist.is_main) as bar:
            task = bar.add_task("evaluating", total=(hi - lo) * len(checkpoints))
            result = run_evaluation(
                eval_data, checkpoints, dev, threshold=cut, val_data=val_data,
                n_boot=bootstrap, seed=seed, batch_size=batch_size,
                workers=dist.workers(default_workers()) if workers is None else workers,
                advance=lambda: bar.advance(task), max_pixels=max_pixels, dist=dist,
            )
    if not dist.is_main:
        raise typer.Exit(EXIT_OK)
    for failure in result.report["failed"]:
        report_failure(failure["path"], failure["error"])
    if out is not None:
        write_outputs(result, out, overwrite=force)
        log.info("wrote predictions.csv, report.json and plots to %s", out)
    if fmt == "json":
        typer.echo(report_json(result.report), nl=False)
    else:
        err.print(report_table(result.report))
    raise typer.Exit(EXIT_PARTIAL if result.report["failed"] else EXIT_OK)


@app.command()
@handle_errors
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
        typer.Option(help="Source layout: auto, isic2016, isic2017, isic2018, isic2019, isic2020, "
                     "folder or csv."),
    ] = "auto",
    val_fraction: Annotated[
        float,
        typer.Option(min=0.0, help="Share of train carved into a stratified val split when the "
                     "source has none (0: none)."),
    ] = DEFAULT_VAL_FRACTION,
    seed: Annotated[int, typer.Option(help="Seed of the val split carve.")] = DEFAULT_SEED,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", min=1, help="Decoding threads (default: min(4, cores))."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into an --out holding another dataset or other files."),
    ] = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
) -> None:
    """Check a labelled dataset, then write it preprocessed (paper crop, 256×256) with its masks."""
    refuse("prepare")
    with progress() as bar:
        tasks: dict[str, TaskID] = {}

        def show(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = prepare_dataset(
            source, out, dataset=dataset, val_fraction=val_fraction, seed=seed, workers=workers,
            force=force, progress=show, max_pixels=max_pixels,
        )
    for folder, count in result.ignored.items():
        log.info("ignored %d unlabelled images in %s", count, folder)
    err.print(summary_table(result))
    log.info(
        "prepared %d images (%d written, %d already done) in %.1f s",
        result.written + result.skipped, result.written, result.skipped, result.seconds,
    )


@app.command("train")
@handle_errors
def train_command(
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Prepared dir (from `attnmel prepare`).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run dir: last/best checkpoints, metrics.csv.")
    ],
    arch: Annotated[
        str, typer.Option(help="attnmel (AttnMel-CNN), mel-cnn, vgg16-gap or vgg16 (paper §3.2).")
    ] = "attnmel",
    backbone: Annotated[str, typer.Option(help="vgg16_bn or vgg16.")] = "vgg16_bn",
    pretrained: Annotated[
        bool, typer.Option("--pretrained/--no-pretrained", help="ImageNet initialisation (§3.1).")
    ] = True,
    pretrained_weights: Annotated[
        Path | None,
        typer.Option(help="Local torchvision VGG-16 ImageNet weights file (.pth or .safetensors)."),
    ] = None,
    roi: Annotated[
        str,
        typer.Option(help="Attention regularisation (Eq. 5): none, lesion, dermo or background."),
    ] = "none",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs.")] = 50,
    lr_step: Annotated[
        int, typer.Option(min=1, help="Divide the learning rate by 10 every this many epochs.")
    ] = 10,
    average_last: Annotated[
        int,
        typer.Option(min=0, help="Also save averaged.safetensors: the weights of the last K "
                     "epochs averaged (batch-norm statistics recomputed); 0 = off."),
    ] = 0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")
    ] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="Initial SGD learning rate.")] = 0.01,
    oversample: Annotated[
        int, typer.Option(min=1, help="Times each melanoma is drawn per epoch.")
    ] = 4,
    width: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Channel width multiplier (1 = the paper's VGG-16)."),
    ] = 1.0,
    image_size: Annotated[
        int,
        typer.Option(help="Input side S, a multiple of 32: random S crops of the image resized to "
                     "S·256/224 (224 = the paper)."),
    ] = 224,
    seed: Annotated[
        int, typer.Option(help="Seed of initialisation, sampling and augmentation.")
    ] = 0,
    deterministic: Annotated[
        bool,
        typer.Option(help="Deterministic kernels: a rerun (or --resume) repeats the run exactly."),
    ] = False,
    device: DeviceOpt = "auto",
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", min=0,
                     help="Data-loading workers [default: cores - 1, at most 8]."),
    ] = None,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = True,
    cache_images: Annotated[
        bool,
        typer.Option("--cache-images/--no-cache-images",
                     help="Decode the training images once into RAM (when ≤ 1/4 of it)."),
    ] = True,
    resume: Annotated[
        bool,
        typer.Option(help="Continue the interrupted run in --out (same options; --epochs may "
                     "grow)."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a run already in --out.")] = False,
    sync_bn: Annotated[
        bool,
        typer.Option("--sync-bn/--no-sync-bn",
                     help="Under torchrun on GPUs: batch-norm statistics over the global batch "
                     "(SyncBatchNorm) instead of each GPU's share."),
    ] = False,
) -> None:
    """Train a model with the paper's recipe; print the best checkpoint's path on stdout.

    Several GPUs or machines: ``torchrun --nproc_per_node N -m attnmel_cli train …``
    (--batch-size stays the global batch).
    """
    from attnmel_cli.run_dir import BEST
    from attnmel_cli.train import TrainConfig, train  # lazy: imports scikit-learn

    result = train(
        TrainConfig(
            data=data, out=out, arch=arch, backbone=backbone, pretrained=pretrained,
            pretrained_weights=pretrained_weights, roi=roi, epochs=epochs, batch_size=batch_size,
            lr=lr, lr_step=lr_step, average_last=average_last, oversample=oversample, width=width,
            image_size=image_size, seed=seed,
            deterministic=deterministic, device=device, workers=workers, amp=amp,
            cache_images=cache_images, resume=resume, force=force, sync_bn=sync_bn,
        ),
        console=err,
    )
    if from_env().is_main:
        log.info("best epoch %d: validation AUC %.4f", result.best_epoch, result.best_auc)
        typer.echo(result.run_dir / BEST)


def main() -> None:
    """Console-script entry point; usage errors exit 1 (2 means some inputs failed)."""
    # A file name that is not valid UTF-8 goes to stdout as its own bytes, never a crash.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    try:
        code = typer.main.get_command(app).main(standalone_mode=False)
    except typer.Abort:
        err.print("interrupted")
        code = 130
    except typer.TyperException as exc:  # bad flag, missing argument, invalid value
        exc.show(file=sys.stderr)  # type: ignore[attr-defined]
        code = EXIT_USAGE
    sys.exit(code if isinstance(code, int) else EXIT_OK)
