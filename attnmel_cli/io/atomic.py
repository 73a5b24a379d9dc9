"""Atomic file output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
import time
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


_LEGACY_AGE_S = 3600  # a temporary file named without its writer's process id: stale after this


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: running
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files of writes of ``target`` that a kill interrupted (their
    writer's process id, in their name, is no longer running; an older name without it: an
    hour old); return them. Nothing else is touched, a running writer's file least of all."""
    folder = target.parent if str(target.parent) else Path(".")
    name = re.escape(target.name)
    tagged = re.compile(rf"\.{name}\.(\d+)\.[a-z0-9_]{{8}}\.tmp")
    legacy = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}\.tmp")
    removed = []
    for tmp in folder.glob(f".{glob.escape(target.name)}.*.tmp"):
        match = tagged.fullmatch(tmp.name)
        try:
            stale = (not _running(int(match[1])) if match else
                     legacy.fullmatch(tmp.name) is not None
                     and time.time() - tmp.lstat().st_mtime > _LEGACY_AGE_S)
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


@contextlib.contextmanager
def atomic_path(target: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left as it was; those of
    earlier writes that a kill interrupted go first (:func:`remove_stale_temporaries`).
    With ``overwrite=False`` an existing ``target`` is refused before anything is written.
    """
    target = Path(target)
    refuse_unless_forced(target if target.exists() else None, force=overwrite)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp",
                                        dir=folder)
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
