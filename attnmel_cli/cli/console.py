"""What the commands show on stderr: the console, progress bars, one-line failures."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from attnmel_cli.io.safe_text import printable

err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("attnmel")


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A log handler that writes to whatever ``sys.stderr`` is when a record is emitted, not to
    the stream it was made with: the command line run in-process (tests, notebooks) replaces
    stderr with a buffer and closes it afterwards, and a handler kept on that closed stream
    would print "--- Logging error ---" tracebacks for every later message."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:  # StreamHandler.__init__ sets it: ignored
        pass


def progress(enabled: bool = True) -> Progress:
    """A Rich progress bar on stderr (silent when stderr is not a terminal or not ``enabled``)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not (enabled and err.is_terminal),
    )


def report_failure(path: str, message: str) -> None:
    """One line on stderr for an input that failed (the message already names the file)."""
    # Text, not markup: file names may hold "[/x]" or ":smile:"; control characters escaped so
    # that the line stays one line and no escape sequence reaches the terminal.
    err.print(Text.assemble(("error:", "red"), " ", printable(message)), highlight=False)


class SafeFormatter(logging.Formatter):
    """Log lines with control characters escaped: they name files, and stay one line each."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))
