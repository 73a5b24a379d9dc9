"""Scoring with an exported ONNX model through ONNX Runtime, without torch: the same
:class:`attnmel_cli.engine.scored.Scored` results, in input order, as the PyTorch session.

Photos are decoded and preprocessed (numpy/Pillow, :func:`attnmel_cli.engine.scored.load_input`)
by a thread pool (:func:`attnmel_cli.parallel.parallel_map`) while ONNX Runtime runs the previous
batch (Pillow releases the GIL while it decodes and resizes). The checkpoint metadata travels in
the model's metadata properties (:mod:`attnmel_cli.deploy.export`), so the file alone is enough.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnmel_cli.deploy.onnx_checks import (
    QUIET,
    check_external_data,
    check_signature,
    probe,
    quiet_run,
    read_model,
    reason_of,
)
from attnmel_cli.deploy.onnx_deps import (
    INPUT_NAME,
    LOGITS_NAME,
    PRECISION_KEY,
    require,
)
from attnmel_cli.deploy.onnx_digest import digest_mismatch
from attnmel_cli.engine.scored import (
    DEFAULT_OPTIONS,
    VIEWS,
    Scored,
    ScoringOptions,
    apply_view,
    load_input,
    map_names,
    non_finite,
    undo_view,
)
from attnmel_cli.errors import AttnMelError, CheckpointError, InputError
from attnmel_cli.io.checkpoint import FORMAT, CheckpointMeta
from attnmel_cli.io.safe_text import printable
from attnmel_cli.models.names import melanoma_index
from attnmel_cli.parallel import parallel_map, scoring_workers

Loaded = tuple[np.ndarray | None, str | None]  # input (3, S, S) or None, error or None


def providers(device: str, available: Sequence[str]) -> list[Any]:
    """ONNX Runtime execution providers for ``--device``: ``auto`` is CUDA when ONNX Runtime has
    it, then the CPU; ``cuda[:N]`` needs it; ``cpu`` is the CPU alone."""
    cuda, cpu = "CUDAExecutionProvider" in available, "CPUExecutionProvider"
    if device == "auto":
        return ["CUDAExecutionProvider", cpu] if cuda else [cpu]
    if device == "cpu":
        return [cpu]
    if device == "cuda" or device.startswith("cuda:"):
        if not cuda:
            raise AttnMelError(
                f"device {device!r} requested but this onnxruntime has no CUDA execution provider "
                "(install onnxruntime-gpu)"
            )
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise AttnMelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
        return [("CUDAExecutionProvider", {"device_id": int(index)}), cpu]
    raise AttnMelError(f"device {device!r} is not available to ONNX Runtime; use auto, cpu or cuda")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, in float32 as the PyTorch path computes it."""
    z = logits.astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class OnnxSession:
    """An exported model loaded in ONNX Runtime, ready to score (see :class:`ScoringSession`)."""

    session: Any  # onnxruntime.InferenceSession
    meta: CheckpointMeta
    name: str
    outputs: list[str]
    precision: str

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> OnnxSession:
        """Load the ONNX model ``path``: its digest, external data, metadata (validated as a
        checkpoint's is), graph signature and a probe batch are checked first
        (:mod:`attnmel_cli.deploy.onnx_checks`); any failure is a one-line CheckpointError."""
        ort = require("onnxruntime")
        ort.set_default_logger_severity(QUIET)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: ONNX model not found" if not path.exists() else f"{path}: not a file"
            )
        mismatch = digest_mismatch(path)
        if mismatch:
            raise CheckpointError(f"{path}: {mismatch}")
        proto = read_model(path)
        check_external_data(path, proto)
        props = {p.key: p.value for p in proto.metadata_props}
        if props.get("format") != FORMAT:
            raise CheckpointError(
                f"{path}: an ONNX model without attnmel metadata; write it with `attnmel export`"
            )
        meta = CheckpointMeta.from_header(path, props)
        del proto
        chosen = providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = QUIET
        try:
            session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # ONNX Runtime's own exception types (InvalidProtobuf, Fail…)
            raise CheckpointError(f"{path}: not an ONNX model ONNX Runtime can load "
                                  f"({reason_of(exc)})") from None
        outputs = [o.name for o in session.get_outputs()]
        inputs = [i.name for i in session.get_inputs()]
        missing = [n for n in (LOGITS_NAME, *map_names(meta)) if n not in outputs]
        if inputs != [INPUT_NAME] or missing:
            raise CheckpointError(
                f"{path}: expected input {INPUT_NAME!r} and outputs {LOGITS_NAME!r}, "
                f"{', '.join(map_names(meta)) or 'no map'}; found inputs "
                f"{printable(inputs)}, outputs {printable(outputs)}"
            )
        check_signature(path, session, meta, map_names(meta))
        probe(path, session, meta, outputs, map_names(meta))
        return cls(session, meta, path.name, outputs, props.get(PRECISION_KEY, "fp32"))

    def map_names(self) -> list[str]:
        """The maps this model's variant produces (pool3/pool4 or cam, or none)."""
        return map_names(self.meta)

    def forward(
        self, x: np.ndarray, *, tta: bool = False
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Inputs (N, 3, S, S) float32 → class probabilities (N, K) and each map (N, 1, h, w);
        ``tta``: averaged over the 8 flips/rotations, each map turned back first."""
        views = VIEWS if tta else ((0, False),)
        prob_sum: np.ndarray | None = None
        map_sums: dict[str, np.ndarray] = {}
        wanted = [LOGITS_NAME, *self.map_names()]
        for k, flip in views:
            try:
                run = self.session.run(wanted, {INPUT_NAME: apply_view(x, k, flip)},
                                       quiet_run(self.session))
            except Exception as exc:  # ONNX Runtime's own exception types
                raise InputError(f"{self.name} failed in ONNX Runtime on the batch of this "
                                 f"image ({reason_of(exc)})") from None
            out = dict(zip(wanted, run, strict=True))
            probs = softmax(out.pop(LOGITS_NAME))
            prob_sum = probs if prob_sum is None else prob_sum + probs
            for name, m in out.items():
                m = undo_view(m.astype(np.float32), k, flip)
                map_sums[name] = map_sums[name] + m if name in map_sums else m
        assert prob_sum is not None
        n = np.float32(len(views))
        return prob_sum / n, {name: s / n for name, s in map_sums.items()}

    def score(
        self, paths: Sequence[str], options: ScoringOptions = DEFAULT_OPTIONS
    ) -> Iterator[Scored]:
        """Score ``paths`` in input order as ``options`` say (``workers`` decoding threads;
        ``amp``, the PyTorch session's bf16 on CUDA, has no effect here)."""
        pre, batch_size = self.meta.preprocess, options.batch_size
        keep_maps, tta = options.keep_maps, options.tta

        def load(path: str) -> Loaded:
            try:
                return load_input(path, pre, prepared=options.prepared,
                                  max_pixels=options.max_pixels), None
            except InputError as exc:
                return None, str(exc)

        workers = scoring_workers(options.workers)
        batch: list[tuple[int, str, Loaded]] = []
        for index, (path, loaded) in enumerate(
            zip(paths, parallel_map(load, paths, workers), strict=True)
        ):
            batch.append((index, str(path), loaded))
            if len(batch) == batch_size:
                yield from self._score_batch(batch, keep_maps, tta)
                batch = []
        if batch:
            yield from self._score_batch(batch, keep_maps, tta)

    def _score_batch(
        self, batch: list[tuple[int, str, Loaded]], keep_maps: bool, tta: bool
    ) -> Iterator[Scored]:
        ok = [(i, x) for i, (_, _, (x, _)) in enumerate(batch) if x is not None]
        try:
            probs, maps = self.forward(np.stack([x for _, x in ok]), tta=tta) if ok else (None, {})
        except InputError as exc:  # the whole batch failed in the runtime: each image says so
            probs, maps, ok = None, {}, []
            batch = [(index, path, (None, error or f"{path}: {exc}"))
                     for index, path, (_, error) in batch]
        row = {i: r for r, (i, _) in enumerate(ok)}
        for i, (index, path, (_, error)) in enumerate(batch):
            r = row.get(i)
            if r is not None:
                error = non_finite(path, self.name, probs[r])  # type: ignore[index]
            if error is not None:
                yield Scored(index, path, error=error)
                continue
            mel = melanoma_index(self.meta.classes)
            yield Scored(
                index, path, float(probs[r, mel]),  # type: ignore[index]
                {k: v[r, 0] for k, v in maps.items()} if keep_maps else {},
                probs=tuple(map(float, probs[r])),  # type: ignore[index]
            )
