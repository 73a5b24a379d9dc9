"""Whether a checkpoint trained on the images ``evaluate`` scores: its figures there are then no
estimate of its accuracy on new images, and every output says so (stderr, the JSON report, the
terminal table, the HTML report)."""

from __future__ import annotations

from typing import Any

from attnmel_cli.data.id_set import count_in, decode_ids
from attnmel_cli.errors import CheckpointError
from attnmel_cli.evaluation.report_types import TrainingOverlap
from attnmel_cli.evaluation.results import EvalData
from attnmel_cli.io.checkpoint import CheckpointMeta


def prepared_fingerprint(data: EvalData) -> str | None:
    """The data fingerprint of a prepared dir (as training records it), None for other data."""
    if not data.prepared:
        return None
    from attnmel_cli.data.manifest import data_fingerprint, read_manifest
    from attnmel_cli.data.prepare import prepared_crop_fraction

    return data_fingerprint(read_manifest(data.source), prepared_crop_fraction(data.source))


def _split_trained_on(train_config: dict[str, Any], split: str | None) -> bool:
    if train_config.get("folds"):  # folds pool train + val
        return split in ("train", "val")
    return split in str(train_config.get("train_splits", "train")).split(",")


def training_overlap(
    meta: CheckpointMeta, data: EvalData, fingerprint: str | None, where: str = "checkpoint"
) -> TrainingOverlap:
    """How many of ``data``'s images the checkpoint trained on, by its training image ids where
    it records them, else by its data fingerprint (this prepared dir, a split it trained on: all
    of them); not ``known`` when neither tells (a checkpoint from before 0.2 on other data)."""
    ids = [item.image_id for item in data.items]
    images, evidence = 0, "the checkpoint records neither these images' ids nor this data"
    known = bool(meta.train_image_ids) or bool(fingerprint and meta.data_fingerprint == fingerprint)
    if meta.train_image_ids:
        try:
            images = count_in(decode_ids(meta.train_image_ids), ids)
        except ValueError as exc:
            raise CheckpointError(f"{where}: invalid train_image_ids ({exc})") from None
        evidence = "image ids recorded in the checkpoint"
    elif fingerprint and meta.data_fingerprint == fingerprint:
        trained = _split_trained_on(meta.train_config, data.split)
        images = len(set(ids)) if trained else 0
        evidence = (f"the checkpoint's data fingerprint is this prepared dir's and it trained on "
                    f"split {data.split!r}" if trained else
                    f"this prepared dir, split {data.split!r}, which it did not train on")
    return TrainingOverlap(images > 0, images, len(set(ids)), evidence, known)
