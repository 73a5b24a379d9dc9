"""attnmel's command line: the Typer app, its global options, and AttnMelError mapped to a
one-line message and an exit code. The commands live in one module each beside this one.

Records go to stdout; progress bars, logs and errors go to stderr. The command modules import
torch (and scikit-learn…) inside their functions, so that ``--help``, ``--version`` and scoring
with an ONNX model start without it.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.text import Text

from attnmel_cli.cli.console import SafeFormatter, StderrHandler, err
from attnmel_cli.cli.evaluate import evaluate
from attnmel_cli.cli.explain import explain
from attnmel_cli.cli.export import export
from attnmel_cli.cli.help import PlainHelpCommand
from attnmel_cli.cli.options import QuietOpt, VerboseOpt, VersionOpt
from attnmel_cli.cli.predict import predict
from attnmel_cli.cli.prepare import prepare
from attnmel_cli.cli.train import train_command
from attnmel_cli.errors import EXIT_OK, EXIT_USAGE, AttnMelError
from attnmel_cli.io.safe_text import printable

app = typer.Typer(
    name="attnmel",
    help="Melanoma recognition via visual attention (Yan, Kawahara, Hamarneh, IPMI 2019).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: whole option names at any width (cli.help)
)
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn AttnMelError into one line on stderr and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AttnMelError as exc:
            if not getattr(exc, "relayed", False):  # torchrun: rank 0 printed it already
                # control characters of a file's names or content escaped (the line breaks of
                # a list of problems kept)
                message = printable(str(exc), newlines=getattr(exc, "multiline", False))
                err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # stdout closed early (| head): the reader has what it wanted
            silence_stdout()
            raise typer.Exit(EXIT_OK) from None
        except OSError as exc:  # the system refused (disk full, permissions…): one line, no trace
            where = f"{exc.filename}: " if exc.filename else ""
            message = printable(f"{where}{exc.strerror or exc}")
            err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def silence_stdout() -> None:
    """Point stdout at the null device once its reader has gone (Python's EPIPE recipe), so that
    the flush at exit neither fails nor prints a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # a stdout without a descriptor
        pass


@app.callback()
def main_options(verbose: VerboseOpt = False, quiet: QuietOpt = False,
                 version: VersionOpt = False) -> None:
    """Melanoma recognition via visual attention."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    handler = StderrHandler()
    handler.setFormatter(SafeFormatter("attnmel: %(message)s"))  # file names: controls escaped
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Pillow's two-line warnings about odd files: a file attnmel cannot use gets its own one-line
    # error instead (and -v shows them).
    if not verbose:
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


for command in (predict, explain, evaluate, prepare, export):
    app.command(cls=PlainHelpCommand)(handle_errors(command))
app.command("train", cls=PlainHelpCommand)(handle_errors(train_command))


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (``kill``, a job scheduler, a timeout) unwinds like an error: the temporary file
    of a write in progress is removed, the target left as it was; exit 128 + 15."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry point; usage errors exit 1 (2 means some inputs failed)."""
    # A file name that is not valid UTF-8 goes to stdout as its own bytes, never a crash.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = typer.main.get_command(app).main(standalone_mode=False)
    except typer.Abort:
        err.print("interrupted")
        code = 130
    except typer.TyperException as exc:  # bad flag, missing argument, invalid value
        exc.show(file=sys.stderr)  # type: ignore[attr-defined]
        code = EXIT_USAGE
    sys.exit(code if isinstance(code, int) else EXIT_OK)
