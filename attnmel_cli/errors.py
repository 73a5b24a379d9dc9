"""The project's own error class; the CLI maps it to a one-line message and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 1  # usage or setup error: bad flag, missing/invalid checkpoint or data dir
EXIT_PARTIAL = 2  # some inputs failed while the rest went through


class AttnMelError(Exception):
    """An expected failure with a message fit for a user; never shown with a traceback."""

    exit_code: int = EXIT_USAGE


class InputError(AttnMelError):
    """One input file (image, mask, CSV row) cannot be used; a batch goes on without it."""

    exit_code = EXIT_PARTIAL


class CheckpointError(AttnMelError):
    """A file is not a valid attnmel checkpoint."""


class DataError(AttnMelError):
    """A dataset folder, label file or prepared dir is missing or inconsistent."""
