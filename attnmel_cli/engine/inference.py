"""Batch scoring, shared by ``predict``, ``explain``, ``evaluate`` and training's validation.

Images are decoded and preprocessed in DataLoader worker processes while the network runs, in
batches, and results stream out in input order: memory stays flat however many files there are.
A file that cannot be used yields a :class:`Scored` with ``error`` set; the rest go on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from attnmel_cli.data.decode import DEFAULT_MAX_PIXELS
from attnmel_cli.engine.scored import (
    DEFAULT_OPTIONS,
    Scored,
    ScoringOptions,
    load_input,
    map_names,
    non_finite,
)
from attnmel_cli.engine.tta import tta_forward
from attnmel_cli.errors import AttnMelError, InputError
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.io.model_checkpoint import load_checkpoint
from attnmel_cli.models.attnmel import AttnMelNet
from attnmel_cli.models.names import melanoma_index
from attnmel_cli.parallel import scoring_workers


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; otherwise the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AttnMelError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttnMelError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AttnMelError("device 'mps' requested but Apple MPS is not available")
    return device


class ImageFiles(Dataset):
    """Paths → (index, input tensor (3, S, S) or None, error message or None), each through
    :func:`attnmel_cli.engine.scored.load_input` (``prepared``: every path is a prepared image).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        meta: CheckpointMeta,
        *,
        prepared: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.meta, self.prepared, self.max_pixels = meta, prepared, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.paths[index]
        try:
            x = load_input(path, self.meta.preprocess, prepared=self.prepared,
                           max_pixels=self.max_pixels)
            return index, torch.from_numpy(x), None
        except InputError as exc:
            return index, None, str(exc)


def _collate(
    items: list[tuple[int, torch.Tensor | None, str | None]],
) -> tuple[list[int], torch.Tensor | None, list[int], list[str]]:
    ok = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, e) for i, x, e in items if x is None]
    batch = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], batch, [i for i, _ in failed], [e or "" for _, e in failed]


def forward_batch(
    model: AttnMelNet,
    batch: torch.Tensor,
    device: torch.device,
    *,
    keep_maps: bool = False,
    amp: bool = False,
    tta: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inputs (N, 3, S, S) → class probabilities (N, K) and, with ``keep_maps``, each map as
    (N, h, w) float32, both on the host. The network step of :func:`score_paths` (also timed on
    its own by ``bench/bench_predict.py``); call it under ``torch.inference_mode()``.
    ``amp``: bf16 autocast on CUDA (faster; rounds the logits, so scores may tie).
    ``tta``: average over the 8 flips/rotations (:func:`attnmel_cli.engine.tta.tta_forward`).
    """
    batch = batch.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        if tta:
            class_probs, maps = tta_forward(model, batch)
        else:
            logits, maps = model(batch)
            class_probs = torch.softmax(logits.float(), dim=1)
    probs = class_probs.cpu().numpy()
    host_maps = {k: v.float()[:, 0].cpu().numpy() for k, v in maps.items()} if keep_maps else {}
    return probs, host_maps


def score_paths(
    model: AttnMelNet,
    meta: CheckpointMeta,
    paths: Sequence[str | Path],
    options: ScoringOptions = DEFAULT_OPTIONS,
    *,
    device: torch.device,
    name: str = "the model",
    nan_is_error: bool = True,
) -> Iterator[Scored]:
    """Score ``paths`` with ``model`` (eval mode, on ``device``) as ``options`` say
    (:class:`attnmel_cli.engine.scored.ScoringOptions`); yield results in input order.

    ``nan_is_error``: an image whose probabilities are not finite is an error naming ``name``
    (training's validation keeps the NaN: its metrics say the run diverged).
    """
    workers = scoring_workers(options.workers)
    loader = DataLoader(
        ImageFiles(paths, meta, prepared=options.prepared, max_pixels=options.max_pixels),
        batch_size=options.batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    model.eval()
    with torch.inference_mode():
        for ok_idx, batch, bad_idx, errors in loader:
            results: dict[int, Scored] = {
                i: Scored(i, str(paths[i]), error=e) for i, e in zip(bad_idx, errors, strict=True)
            }
            if batch is not None:
                probs, host_maps = forward_batch(model, batch, device, keep_maps=options.keep_maps,
                                                 amp=options.amp, tta=options.tta)
                mel = melanoma_index(meta.classes)
                for j, i in enumerate(ok_idx):
                    error = non_finite(str(paths[i]), name, probs[j]) if nan_is_error else None
                    if error is not None:  # a NaN is an error, never a class
                        results[i] = Scored(i, str(paths[i]), error=error)
                        continue
                    results[i] = Scored(
                        i, str(paths[i]), float(probs[j, mel]),
                        {k: v[j] for k, v in host_maps.items()}, probs=tuple(map(float, probs[j])),
                    )
            yield from (results[i] for i in sorted(results))


@dataclass
class Session:
    """A loaded checkpoint ready to score."""

    model: AttnMelNet
    meta: CheckpointMeta
    name: str
    device: torch.device

    @classmethod
    def load(
        cls, checkpoint: Path, device: torch.device, *, channels_last: bool | None = None,
        compile_model: bool = False,
    ) -> Session:
        """Load ``checkpoint`` onto ``device`` for scoring.

        ``channels_last``: NHWC weights, so that convolutions run channels-last (``None``: on
        CPU and CUDA; measured faster for VGG-16 on CPU by ``bench/bench_fastpaths.py``).
        ``compile_model``: ``torch.compile`` the network (pays off on long CUDA runs; the first
        batches wait for the compilation). On CUDA cuDNN autotunes its kernels once (the input
        size is fixed by the checkpoint).
        """
        model, meta = load_checkpoint(checkpoint, device)
        if channels_last is None:
            channels_last = device.type in ("cpu", "cuda")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if compile_model:
            model = torch.compile(model)  # type: ignore[assignment]
        return cls(model, meta, checkpoint.name, device)

    def map_names(self) -> list[str]:
        """The maps this checkpoint's variant produces (pool3/pool4 or cam, or none)."""
        return map_names(self.meta)

    def score(
        self, paths: Sequence[str], options: ScoringOptions = DEFAULT_OPTIONS
    ) -> Iterator[Scored]:
        """:func:`attnmel_cli.engine.inference.score_paths` with this session's model."""
        return score_paths(self.model, self.meta, paths, options, device=self.device,
                           name=self.name)
