"""Atomic file output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from attnmel_cli.errors import AttnMelError


def refuse_unless_forced(
    found: Path | None,
    *,
    force: bool,
    what: str = "already exists",
    hint: str = "pass --force to overwrite it",
    error: type[AttnMelError] = AttnMelError,
) -> None:
    """The one rule for outputs already there: ``found`` (what is in the way, or None) is refused
    with "FOUND: WHAT; HINT" unless ``force`` (every command's ``--force``)."""
    if found is not None and not force:
        raise error(f"{found}: {what}; {hint}")


def ensure_dir(folder: str | Path) -> Path:
    """Create the output folder ``folder`` (and its parents) before any work, or raise an
    AttnMelError saying why it cannot be written (a path under a file, no permission…)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc
        raise AttnMelError(f"{folder}: cannot create this output folder ({reason})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AttnMelError(f"{folder}: output folder is not writable")
    return folder


@contextlib.contextmanager
def atomic_path(target: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left as it was.
    With ``overwrite=False`` an existing ``target`` is refused before anything is written.
    """
    target = Path(target)
    refuse_unless_forced(target if target.exists() else None, force=overwrite)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise AttnMelError(f"{target}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give outputs the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AttnMelError(f"{target}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(
    target: str | Path, writer: Callable[[Path], None], *, overwrite: bool = True
) -> Path:
    """Call ``writer(tmp_path)`` and rename the result onto ``target``."""
    with atomic_path(target, overwrite=overwrite) as tmp:
        writer(tmp)
    return Path(target)


def write_text_atomic(target: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"), overwrite=overwrite)
