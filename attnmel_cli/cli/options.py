"""Option types shared by several commands (``Annotated`` Typer parameters)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnmel_cli import __version__

CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c",
                 help="attnmel .safetensors checkpoint, or an ONNX model from `attnmel export` "
                 "(default: the model shipped with attnmel; predict and explain run its ONNX "
                 "export where onnxruntime is installed)."),
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
    typer.Option(
        "--workers", "-j", min=0,
        help="Images decoded in parallel beside the main work; 0 decodes in the main process "
        "(default: from the CPU count, at most 4).",
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format", "-f",
        help="table (for people), csv or jsonl (one record per image), json (one document); "
        "the default depends on the command.",
    ),
]
AmpOpt = Annotated[
    bool,
    typer.Option(
        "--amp/--no-amp",
        help="Mixed precision on CUDA (faster; scoring in bf16 keeps about 3 significant digits "
        "of each logit); no effect on CPU or MPS.",
    ),
]
TtaOpt = Annotated[
    bool,
    typer.Option(
        "--tta/--no-tta",
        help="Test-time augmentation: average the class probabilities (and the maps, turned "
        "back) over the 8 flips and 90° rotations; 8× the network's work.",
    ),
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


def _print_version(value: bool) -> None:
    """``--version``: print and exit before any command is required."""
    if value:
        typer.echo(f"attnmel {__version__}")
        raise typer.Exit()


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]
VersionOpt = Annotated[
    bool,
    typer.Option("--version", is_eager=True, callback=_print_version,
                 help="Print the version and exit."),
]
