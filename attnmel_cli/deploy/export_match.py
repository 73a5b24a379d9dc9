"""Whether an ONNX file is the fp32 export of a checkpoint (its metadata holds the checkpoint
file's SHA-256) and matches the SHA-256 of its own bytes recorded beside it, checked once per
state of the two files: the answer is kept in the user's cache
(``~/.cache/attnmel/onnx-exports.json``), keyed by each file's path, size, inode and times, so a
later run reads two ``stat`` results instead of hashing 25 MB. Replacing, editing or touching
either file changes its key, and the check runs again."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from attnmel_cli.deploy.onnx_deps import PRECISION_KEY, require
from attnmel_cli.deploy.onnx_digest import digest_mismatch
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import write_text_atomic
from attnmel_cli.io.digest import file_sha256
from attnmel_cli.io.user_cache import cache_dir

log = logging.getLogger("attnmel")

CACHE_NAME = "onnx-exports.json"
CACHE_FORMAT = "attnmel-onnx-exports/1"
MAX_ENTRIES = 64  # the oldest answers go first


def export_matches(onnx_file: Path, checkpoint: Path) -> bool:
    """Whether ``onnx_file`` is the fp32 export of ``checkpoint`` as it is now (cached)."""
    key = json.dumps([_state(onnx_file), _state(checkpoint)])
    path = cache_dir() / CACHE_NAME
    checked = _read(path)
    if key in checked:
        return bool(checked[key])
    matches = _check(onnx_file, checkpoint)
    checked.pop(key, None)
    checked[key] = matches
    _write(path, dict(list(checked.items())[-MAX_ENTRIES:]))
    return matches


def _state(path: Path) -> list[Any]:
    st = os.stat(path)  # follows a symlink: its target's state
    return [str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _check(onnx_file: Path, checkpoint: Path) -> bool:
    """Check the export against the SHA-256 recorded beside it (if any), read its metadata
    (ONNX Runtime, no optimisation) and hash the checkpoint."""
    damaged = digest_mismatch(onnx_file)
    if damaged:
        log.warning("%s: %s", onnx_file, damaged)
        return False
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(onnx_file), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's own exception types: not a model it can load
        log.debug("%s: not loadable by ONNX Runtime (%s)", onnx_file, exc)
        return False
    props = dict(session.get_modelmeta().custom_metadata_map)
    return (props.get(PRECISION_KEY, "fp32") == "fp32"
            and props.get("source_sha256") == file_sha256(checkpoint))


def _read(path: Path) -> dict[str, bool]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, unreadable or damaged: start again
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    checked = data.get("checked")
    return {str(k): bool(v) for k, v in checked.items()} if isinstance(checked, dict) else {}


def _write(path: Path, checked: dict[str, bool]) -> None:
    """Keep the answers; a cache that cannot be written only costs the check next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"format": CACHE_FORMAT, "checked": checked}))
    except (OSError, AttnMelError) as exc:
        log.debug("cannot keep the ONNX export check in %s (%s)", path, exc)
