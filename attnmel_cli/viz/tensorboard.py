"""``train --tensorboard DIR``: TensorBoard logs of every epoch, as the authors watched training:
the loss terms (Eq. 5), validation loss, AP and AUC, the learning rate, and the attention maps
(or CAM) of a fixed set of validation images over their photos, the lesion mask outlined.

Written by rank 0 only; ``metrics.csv`` stays the run's record. Nothing here draws from the
random generators training uses, so a run logs the same epochs with or without it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnmel_cli.data.manifest import Row
from attnmel_cli.data.masks import load_mask
from attnmel_cli.engine.epoch_log import require_tensorboard
from attnmel_cli.engine.inference import score_paths
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.errors import InputError
from attnmel_cli.io.atomic import ensure_dir
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.models.attnmel import AttnMelNet
from attnmel_cli.viz.overlay import composite
from attnmel_cli.viz.thumbnails import panels

log = logging.getLogger("attnmel")

IMAGES_PER_CLASS = 4  # validation images shown each epoch: this many melanomas and others
PANEL_HEIGHT = 192
# metrics.csv column → TensorBoard tag
SCALARS = {
    "train_loss": "train/loss", "train_focal": "train/focal", "train_dice3": "train/dice_pool3",
    "train_dice4": "train/dice_pool4", "val_loss": "val/loss", "val_ap": "val/ap",
    "val_auc": "val/auc", "lr": "lr",
}
def fixed_images(rows: Sequence[Row], per_class: int = IMAGES_PER_CLASS) -> list[Row]:
    """The first ``per_class`` melanomas and others of ``rows`` by image id: the same images
    every epoch, and after ``--resume``."""
    ordered = sorted(rows, key=lambda r: r.image_id)
    return ([r for r in ordered if r.label == 1][:per_class]
            + [r for r in ordered if r.label == 0][:per_class])


class TensorBoardLog:
    """One run's TensorBoard event files in ``log_dir`` (an
    :class:`attnmel_cli.engine.epoch_log.EpochLog`)."""

    def __init__(self, log_dir: Path, data: Path, val_rows: Sequence[Row],
                 train_config: dict[str, Any], *, resume_after: int | None = None) -> None:
        """``resume_after``: the epoch a resumed run continues from; the events of later epochs
        left by the interrupted run are dropped."""
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        ensure_dir(log_dir)
        self.data, self.rows = data, fixed_images(val_rows)
        self.writer = SummaryWriter(
            str(log_dir), purge_step=None if resume_after is None else resume_after + 1
        )
        if resume_after is None:
            text = json.dumps(train_config, indent=2, default=str)
            self.writer.add_text("train_config", f"```json\n{text}\n```", 0)

    def log_epoch(self, record: dict[str, float], model: AttnMelNet, meta: CheckpointMeta,
                  device: torch.device) -> None:
        """Epoch ``record["epoch"]``'s metrics.csv row and the fixed images' attention maps."""
        step = int(record["epoch"])
        for column, tag in SCALARS.items():
            if column in record:
                self.writer.add_scalar(tag, record[column], step)
        with torch.random.fork_rng(devices=[]):  # the loader seeds from the global generator
            for tag, picture in self._pictures(model, meta, device):
                self.writer.add_image(tag, picture, step, dataformats="HWC")
        self.writer.flush()

    def _pictures(self, model: AttnMelNet, meta: CheckpointMeta, device: torch.device,
                  ) -> list[tuple[str, np.ndarray]]:
        """(tag, photo | map … composite as (H, W, 3) uint8) of each fixed image with maps."""
        pre, out = meta.preprocess, []
        paths = [self.data / r.image for r in self.rows]
        for row, scored in zip(self.rows, score_paths(
            model, meta, paths, ScoringOptions(
                batch_size=len(paths) or 1, workers=0, keep_maps=True, prepared=True,
            ), device=device,
        ), strict=True):
            if scored.error is not None or not scored.maps:
                continue
            try:
                mask = (load_mask(self.data / row.lesion_mask, pre, prepared=True)
                        if row.lesion_mask else None)
                pictures = panels(scored.path, scored.maps, pre, mask, side=PANEL_HEIGHT)
            except InputError as exc:
                log.warning("tensorboard: %s", exc)
                continue
            kind = "melanoma" if row.label else "other"
            picture = composite(pictures, height=PANEL_HEIGHT)
            out.append((f"attention/{kind}/{row.image_id}", np.asarray(picture)))
        return out

    def close(self) -> None:
        self.writer.close()
