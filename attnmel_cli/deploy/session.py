"""Which engine scores a model, chosen in one place: the ONNX export (ONNX Runtime, without
torch: :mod:`.runtime`) or the checkpoint (PyTorch: :mod:`attnmel_cli.engine.inference`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from attnmel_cli.deploy.export_match import export_matches
from attnmel_cli.deploy.onnx_deps import ONNX_SUFFIX, is_onnx, runtime_serves
from attnmel_cli.io.default_model import default_checkpoint, locate

if TYPE_CHECKING:
    import torch

    from attnmel_cli.engine.scored import ScoringSession

log = logging.getLogger("attnmel")


def onnx_copy(checkpoint: str | Path | None, device: str) -> Path | None:
    """The ONNX export to score instead of ``checkpoint`` (None: the default model): the
    ``.onnx`` file of the same name beside it, where the command does not run under torchrun
    (PyTorch splits that work), ONNX Runtime serves ``device``
    (:func:`attnmel_cli.deploy.onnx_deps.runtime_serves`) and the file is the fp32 export of the
    checkpoint as it is now (:func:`attnmel_cli.deploy.export_match.export_matches`, checked once
    per state of the two files). None: the checkpoint, scored by PyTorch."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        return None
    source = default_checkpoint() if checkpoint is None else locate(checkpoint)
    if source is None or is_onnx(source) or not source.is_file():
        return None
    copy = source.with_suffix(ONNX_SUFFIX)
    if not copy.is_file() or not runtime_serves(device):
        return None
    if not export_matches(copy, source):
        log.warning("%s is not the export of the %s beside it: scoring that with PyTorch "
                    "(export it again: attnmel export %s --out %s --force)",
                    copy, source.name, source, copy)
        return None
    return copy


def load_session(path: Path, device: str | torch.device = "auto") -> ScoringSession:
    """A scoring session for ``path``, the one ONNX-or-PyTorch dispatcher of ``predict`` and
    ``explain``: ONNX Runtime for an ``.onnx`` file (no torch imported; ``device`` as
    ``--device`` names it), PyTorch for an attnmel checkpoint (``device`` named, or the
    ``torch.device`` a torchrun process was given)."""
    if is_onnx(path):
        from attnmel_cli.deploy.runtime import OnnxSession  # lazy: numpy only, no torch

        return OnnxSession.load(path, str(device))
    from attnmel_cli.engine.inference import Session, resolve_device  # lazy: torch

    return Session.load(path, resolve_device(device) if isinstance(device, str) else device)
