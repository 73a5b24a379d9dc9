"""attnmel's command line: parse, call the core, render; map AttnMelError to exit codes.

Records go to stdout; progress bars, logs and errors go to stderr.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from attnmel_cli import __version__
from attnmel_cli.checkpoint import resolve_checkpoint
from attnmel_cli.errors import EXIT_OK, EXIT_PARTIAL, AttnMelError
from attnmel_cli.inference import resolve_device
from attnmel_cli.predict import (
    Session,
    expand_inputs,
    overlay_target,
    read_path_list,
    write_explanation,
    write_overlay,
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


def handle_errors(fn: F) -> F:
    """Turn AttnMelError into one line on stderr and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AttnMelError as exc:
            err.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def progress() -> Progress:
    """A Rich progress bar on stderr (silent when stderr is not a terminal)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    )


def report_failure(path: str, message: str) -> None:
    """One line on stderr for an input that failed (the message already names the file)."""
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)


def collect_inputs(paths: list[str], recursive: bool) -> list[str]:
    """Expand PATH arguments (``-`` reads paths from stdin, one per line)."""
    items: list[str] = []
    for item in paths:
        items.extend(read_path_list(sys.stdin) if item == "-" else [item])
    inputs = list(expand_inputs(items, recursive=recursive))
    if not inputs:
        raise AttnMelError("no images to score (empty folder or empty list on stdin)")
    return inputs


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Melanoma recognition via visual attention."""
    if version:
        typer.echo(f"attnmel {__version__}")
        raise typer.Exit()
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="attnmel: %(message)s", stream=sys.stderr, force=True)


CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c", help="attnmel .safetensors checkpoint [default: the model in weights/]."),
]
PathsArg = Annotated[
    list[str], typer.Argument(help="Image files, folders, or - to read paths from stdin (one per line).")
]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Walk subfolders of folders.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", "-j", min=0, help="Decoding worker processes [default: cores - 1].")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda[:N] or mps.")]
MaxPixelsOpt = Annotated[
    int, typer.Option("--max-pixels", min=1, help="Refuse images declaring more pixels (decompression bombs).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


@app.command()
@handle_errors
def predict(
    paths: PathsArg,
    checkpoint: CheckpointOpt = None,
    recursive: RecursiveOpt = False,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"Output: {'|'.join(FORMATS)} [default: table on a terminal, csv when piped]."),
    ] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Label 1 (melanoma) when p_melanoma ≥ this.")] = 0.5,
    overlay: Annotated[Path | None, typer.Option(help="Write the attention overlay of the single input image here.")] = None,
    overlay_dir: Annotated[Path | None, typer.Option(help="Write one attention overlay per image into this folder.")] = None,
    overlay_map: Annotated[str, typer.Option(help="Map drawn in overlays: pool4, pool3 (attnmel) or cam (vgg16-gap).")] = "auto",
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    force: ForceOpt = False,
) -> None:
    """Score images: one record per image on stdout (path, p_melanoma, label, checkpoint)."""
    fmt = fmt or default_format()
    if fmt not in FORMATS:
        raise AttnMelError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    inputs = collect_inputs(paths, recursive)
    if overlay is not None and len(inputs) != 1:
        raise AttnMelError(f"--overlay takes exactly one input image, got {len(inputs)}; use --overlay-dir")
    if overlay is not None and overlay.exists() and not force:
        raise AttnMelError(f"{overlay}: already exists; pass --force to overwrite it")
    session = Session.load(resolve_checkpoint(checkpoint), resolve_device(device))
    want_maps = overlay is not None or overlay_dir is not None
    map_name = session.map_names()[-1:] if overlay_map == "auto" else [overlay_map]
    if want_maps and (not map_name or map_name[0] not in session.map_names()):
        raise AttnMelError(
            f"{session.name}: a {session.meta.arch} checkpoint has no "
            f"{map_name[0] if map_name else 'attention'} map to overlay "
            f"(available: {', '.join(session.map_names()) or 'none'})"
        )
    writer, failed, taken = RecordWriter(fmt), 0, set[str]()
    with progress() as bar:
        task = bar.add_task("scoring", total=len(inputs))
        for scored in session.score(
            inputs, batch_size=batch_size, workers=workers, keep_maps=want_maps, max_pixels=max_pixels
        ):
            error = scored.error
            if error is None and want_maps:
                target = overlay or overlay_target(scored.path, overlay_dir, taken)  # type: ignore[arg-type]
                try:
                    write_overlay(scored, session.meta, map_name[0], target, max_pixels=max_pixels, overwrite=force)
                except AttnMelError as exc:
                    error = str(exc)
            if error is not None:
                failed += 1
                report_failure(scored.path, error)
            writer.write(record(scored.path, scored.p_melanoma, threshold, session.name, error))
            bar.advance(task)
    writer.close()
    log.info("scored %d of %d images with %s", len(inputs) - failed, len(inputs), session.name)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


@app.command()
@handle_errors
def explain(
    paths: PathsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for overlays, composites and raw maps.")],
    checkpoint: CheckpointOpt = None,
    recursive: RecursiveOpt = False,
    batch_size: BatchOpt = 8,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    force: ForceOpt = False,
) -> None:
    """Write, per image, the attention maps (CAM for vgg16-gap) over the photo at its own size."""
    inputs = collect_inputs(paths, recursive)
    session = Session.load(resolve_checkpoint(checkpoint), resolve_device(device))
    if not session.map_names():
        raise AttnMelError(
            f"{session.name}: a {session.meta.arch} checkpoint has neither attention maps nor a CAM; "
            "explain needs an attnmel or vgg16-gap checkpoint"
        )
    failed, taken = 0, set[str]()
    with progress() as bar:
        task = bar.add_task("explaining", total=len(inputs))
        for scored in session.score(
            inputs, batch_size=batch_size, workers=workers, keep_maps=True, max_pixels=max_pixels
        ):
            error = scored.error
            if error is None:
                stem = overlay_target(scored.path, out, taken, suffix="").name.removesuffix("_attention")
                try:
                    written = write_explanation(scored, session.meta, out, stem, max_pixels=max_pixels, overwrite=force)
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


def main() -> None:
    """Console-script entry point."""
    app()
