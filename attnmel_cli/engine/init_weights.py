"""``train --init``: a first stage's weights into a new run, and the provenance it inherits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.checkpoint import CheckpointMeta, read_metadata, read_tensors

log = logging.getLogger("attnmel")


def inherited(path: Path | None) -> tuple[list[dict[str, Any]], str]:
    """What a run started from ``--init path`` inherits for its checkpoint's provenance: the
    init checkpoint's sources (its own ``sources``, else its one prepared dir), each with role
    ``init``, and its ``train_image_ids``; nothing without --init."""
    if path is None:
        return [], ""
    source = read_metadata(path)
    data = source.train_config.get("data", "")
    own = source.sources or [{"name": Path(data[0] if isinstance(data, list) else data).name,
                              "fingerprint": source.data_fingerprint,
                              "crop_fraction": source.crop_fraction}]
    return [{**s, "role": "init", "checkpoint": path.name} for s in own], source.train_image_ids


HEAD = "classifier."  # the tensors --init leaves fresh when the classes differ


def init_from(model: torch.nn.Module, meta: CheckpointMeta, path: Path) -> None:
    """Load the weights of the attnmel checkpoint ``path`` into ``model`` (``--init``): its arch,
    backbone, width and strides must be the run's; the preprocessing is the run's own. A
    checkpoint of other classes gives everything but the classifier, which starts afresh (a
    binary first stage fine-tuned into a 3-class model)."""
    source = read_metadata(path)
    mine = (meta.arch, meta.backbone, meta.width, tuple(meta.strides))
    theirs = (source.arch, source.backbone, source.width, tuple(source.strides))
    if mine != theirs:
        raise AttnMelError(
            f"{path}: --init needs a checkpoint of the same model (arch, backbone, width, "
            f"strides): it has {theirs}, the run {mine}"
        )
    if (source.mean, source.std) != (meta.mean, meta.std):
        log.warning("%s: trained with mean %s std %s; this run normalises with mean %s std %s",
                    path, source.mean, source.std, meta.mean, meta.std)
    tensors, _ = read_tensors(path)
    fresh_head = tuple(source.classes) != tuple(meta.classes)
    if fresh_head:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(HEAD)}
    loaded = model.load_state_dict(tensors, strict=not fresh_head)
    if loaded.unexpected_keys or any(not k.startswith(HEAD) for k in loaded.missing_keys):
        raise AttnMelError(f"{path}: --init found tensors that do not fit this model (missing "
                           f"{loaded.missing_keys[:3]}, unexpected {loaded.unexpected_keys[:3]})")
    if fresh_head:
        log.info("%s: classes %s, this run's %s: the classifier starts afresh", path,
                 ",".join(source.classes), ",".join(meta.classes))
    log.info("initialised from %s", path)
