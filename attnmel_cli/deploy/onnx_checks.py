"""What attnmel checks of an ``.onnx`` file before and after ONNX Runtime opens it: a model is
untrusted (a user scores files downloaded from anywhere), so it is refused in one line unless

1. its bytes match the SHA-256 recorded beside it, where one is
   (:mod:`attnmel_cli.deploy.onnx_digest`);
2. every tensor kept as external data (initializers, constants, sparse tensors, in subgraphs and
   functions too) names a regular file inside the model's folder: a relative path, no ``..``, no
   symlink out of it, no device or FIFO (ONNX Runtime before 1.24 read any file it was given);
3. its input and outputs have the names, element types and shapes the metadata implies (one
   float batch (N, 3, S, S) with N dynamic; logits (N, K) for K classes; maps (N, 1, h, w));
4. a probe batch of two runs and gives finite logits of that shape.

Reading the graph needs the ``onnx`` package (the same extra as onnxruntime), not torch.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnmel_cli.deploy.onnx_deps import INPUT_NAME, LOGITS_NAME, require
from attnmel_cli.errors import CheckpointError
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.io.safe_text import printable

PROBE_BATCH = 2  # a fixed batch of 1 fails here, as it would on two images
# ONNX Runtime's own log: fatal only. Its error lines are long, multi-line and coloured; attnmel
# says what failed in one line itself.
QUIET = 4


def quiet_run(session: Any) -> Any:
    """RunOptions that keep ONNX Runtime's log of a failed run off stderr."""
    options = require("onnxruntime").RunOptions()
    options.log_severity_level = QUIET
    return options


def reason_of(exc: BaseException) -> str:
    """The last non-empty line of an exception's text (ONNX Runtime's are long), or its type."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return printable(lines[-1].strip()[:300]) if lines else type(exc).__name__


# ── 2. external data ──────────────────────────────────────────────────────────────────────────


def _sparse(sparse: Any) -> Iterator[Any]:
    yield sparse.values
    yield sparse.indices


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield from _sparse(attr.sparse_tensor)
        for sparse in attr.sparse_tensors:
            yield from _sparse(sparse)
        if attr.HasField("g"):
            yield from graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from graph_tensors(graph)


def graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph``: initializers, sparse ones, node attributes, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from _sparse(sparse)
    for node in graph.node:
        yield from _node_tensors(node)


def model_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a ModelProto: its graph's, its functions' and its training info's."""
    yield from graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for info in model.training_info:
        yield from graph_tensors(info.initialization)
        yield from graph_tensors(info.algorithm)


def location_problem(folder: Path, location: str) -> str | None:
    """Why external data at ``location`` may not be read for a model in ``folder`` (None: it
    may): it must name a regular file inside the folder, after every symlink is followed."""
    if not location or "\x00" in location:
        return "is empty or not a path"
    if location.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", location):
        return "is an absolute path"
    if ".." in re.split(r"[\\/]", location):
        return "climbs out of the model's folder (..)"
    base = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(base, location))
    if os.path.commonpath([base, target]) != base:
        return "leads out of the model's folder (a symlink)"
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return "does not exist"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, FIFO or folder)"
    return None


def check_external_data(path: Path, model: Any) -> None:
    """Refuse ``model`` (read from ``path`` without its external data) when any tensor's
    external data lies anywhere but in a regular file inside ``path``'s folder."""
    external = require("onnx").TensorProto.EXTERNAL
    for tensor in model_tensors(model):
        if tensor.data_location != external and not len(tensor.external_data):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        problem = location_problem(path.parent, location)
        if problem:
            raise CheckpointError(
                f"{path}: external data of tensor {printable(repr(tensor.name))} at "
                f"{printable(repr(location))} {problem}; attnmel reads only files inside the "
                "model's folder"
            )


def read_model(path: Path) -> Any:
    """The ModelProto of ``path``, its external data left unread; a one-line error when it is
    not an ONNX model."""
    onnx = require("onnx")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError, onnx's own errors
        raise CheckpointError(f"{path}: not an ONNX model ONNX Runtime can load "
                              f"({reason_of(exc)})") from None


# ── 3–4. the graph's signature, and a probe batch ─────────────────────────────────────────────


def _dims(arg: Any) -> list[Any]:
    return list(arg.shape) if isinstance(arg.shape, list | tuple) else []


def check_signature(path: Path, session: Any, meta: CheckpointMeta, maps: Sequence[str]) -> None:
    """The input and output declarations against the metadata (dimensions ONNX Runtime does
    not know are left to the probe)."""
    (inp,) = session.get_inputs()
    size = meta.image_size
    if inp.type != "tensor(float)":
        raise CheckpointError(f"{path}: input {INPUT_NAME!r} is {printable(inp.type)}, "
                              "not tensor(float)")
    dims = _dims(inp)
    if dims and len(dims) != 4:
        raise CheckpointError(f"{path}: input {INPUT_NAME!r} has shape {printable(dims)}, "
                              f"not (N, 3, {size}, {size})")
    if dims and isinstance(dims[0], int):
        raise CheckpointError(f"{path}: input {INPUT_NAME!r} has a fixed batch of {dims[0]}; "
                              "attnmel needs a dynamic batch axis (`attnmel export` writes one)")
    wanted = (3, size, size)
    if dims and any(isinstance(d, int) and d != w for d, w in zip(dims[1:], wanted, strict=True)):
        raise CheckpointError(f"{path}: input {INPUT_NAME!r} has shape {printable(dims)} but its "
                              f"metadata image_size is {size} (expected (N, 3, {size}, {size}))")
    outputs = {o.name: o for o in session.get_outputs()}
    k = len(meta.classes)
    for name, rank in ((LOGITS_NAME, 2), *((m, 4) for m in maps)):
        out = outputs[name]
        if out.type not in ("tensor(float)", "tensor(float16)"):
            raise CheckpointError(f"{path}: output {name!r} is {printable(out.type)}, "
                                  "not tensor(float)")
        dims = _dims(out)
        if dims and len(dims) != rank:
            raise CheckpointError(f"{path}: output {name!r} has shape {printable(dims)}, "
                                  f"not rank {rank}")
        if name == LOGITS_NAME and dims and isinstance(dims[1], int) and dims[1] != k:
            raise CheckpointError(f"{path}: output {name!r} gives {dims[1]} logit(s) per image "
                                  f"but its metadata classes has {k}")


def probe(
    path: Path, session: Any, meta: CheckpointMeta, outputs: Sequence[str], maps: Sequence[str]
) -> None:
    """Run a batch of :data:`PROBE_BATCH` blank inputs: every output must come back with the
    batch on its first axis, logits (N, K) finite, maps (N, 1, h, w)."""
    size, k = meta.image_size, len(meta.classes)
    x = np.zeros((PROBE_BATCH, 3, size, size), np.float32)
    try:
        got = dict(zip(outputs, session.run(None, {INPUT_NAME: x}, quiet_run(session)),
                       strict=True))
    except Exception as exc:  # ONNX Runtime's own exception types (Fail, RuntimeException…)
        raise CheckpointError(f"{path}: the model fails on a probe batch of {PROBE_BATCH} "
                              f"images ({reason_of(exc)})") from None
    logits = np.asarray(got[LOGITS_NAME])
    if logits.shape != (PROBE_BATCH, k):
        raise CheckpointError(f"{path}: output {LOGITS_NAME!r} is {logits.shape} for a batch of "
                              f"{PROBE_BATCH}; its metadata classes needs ({PROBE_BATCH}, {k})")
    if not np.isfinite(logits).all():
        raise CheckpointError(f"{path}: output {LOGITS_NAME!r} is not finite on a probe batch")
    for name in maps:
        shape = np.shape(got[name])
        if len(shape) != 4 or shape[:2] != (PROBE_BATCH, 1) or not all(shape[2:]):
            raise CheckpointError(f"{path}: output {name!r} is {shape} for a batch of "
                                  f"{PROBE_BATCH}; a map must be ({PROBE_BATCH}, 1, h, w)")
