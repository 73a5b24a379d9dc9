"""The SHA-256 of an exported ``.onnx`` file, recorded beside it as ``MODEL.onnx.sha256`` (the
``sha256sum`` format, so ``sha256sum -c`` checks it too) by ``attnmel export``: scoring refuses a
model whose bytes changed since (a flipped bit scores silently different). It guards against
damage, not against an attacker, who can rewrite both files."""

from __future__ import annotations

import re
from pathlib import Path

from attnmel_cli.io.atomic import write_text_atomic
from attnmel_cli.io.digest import file_sha256

DIGEST_SUFFIX = ".sha256"
_HEX = re.compile(r"[0-9a-f]{64}")


def digest_file(model: Path) -> Path:
    """Where the SHA-256 of ``model`` is recorded: ``MODEL.onnx.sha256`` beside it."""
    return model.with_name(model.name + DIGEST_SUFFIX)


def write_digest(model: Path) -> Path:
    """Record ``model``'s SHA-256 beside it (``sha256sum`` format; ``sha256sum -c`` checks it)."""
    return write_text_atomic(digest_file(model), f"{file_sha256(model)}  {model.name}\n")


def digest_mismatch(model: Path) -> str | None:
    """Why ``model`` does not match the digest recorded beside it (None: it does, or none is)."""
    recorded = digest_file(model)
    if not recorded.is_file():
        return None
    try:
        expected = recorded.read_text(encoding="utf-8", errors="replace").split()[0].lower()
    except (OSError, IndexError):
        expected = ""
    if not _HEX.fullmatch(expected):
        return f"{recorded.name} holds no SHA-256"
    actual = file_sha256(model)
    if actual != expected:
        return (f"its SHA-256 {actual[:16]}… differs from the {expected[:16]}… recorded in "
                f"{recorded.name}: the file was changed or damaged since it was exported")
    return None
