"""A model to and from its checkpoint (:mod:`.checkpoint`): loading validates the metadata,
builds the model from it (:func:`attnmel_cli.models.registry.model_from_meta`) and loads the
tensors strictly."""

from __future__ import annotations

from pathlib import Path

import torch

from attnmel_cli.errors import CheckpointError
from attnmel_cli.io.checkpoint import CheckpointMeta, read_tensors, write_tensors
from attnmel_cli.models.attnmel import AttnMelNet
from attnmel_cli.models.registry import model_from_meta


def save_checkpoint(
    path: str | Path, model: AttnMelNet, meta: CheckpointMeta, *, overwrite: bool = True
) -> Path:
    """Save ``model``'s weights with ``meta`` as one attnmel checkpoint."""
    state = {k: v.clone() for k, v in model.state_dict().items()}  # untie shared storage
    return write_tensors(path, state, meta.to_header(), overwrite=overwrite)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[AttnMelNet, CheckpointMeta]:
    """Validate, build the model the metadata describes, load the tensors strictly; eval mode."""
    path = Path(path)
    tensors, header = read_tensors(path)
    meta = CheckpointMeta.from_header(path, header)
    model = model_from_meta(meta)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what} {names[0]}{f' (+{len(names) - 1} more)' if len(names) > 1 else ''}"
            for what, names in (
                ("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)
            )
            if names
        )
        raise CheckpointError(
            f"{path}: tensors do not match its metadata (arch={meta.arch}, "
            f"backbone={meta.backbone}, width={meta.width}): {detail}"
        )
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), meta
