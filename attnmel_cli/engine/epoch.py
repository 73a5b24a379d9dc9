"""What ``train`` repeats every epoch: optimisation steps over the training set (the loss of
Eq. 5) and the validation pass that picks the best epoch (paper §3.1)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor

from attnmel_cli.config import PreprocessConfig, TrainConfig
from attnmel_cli.data.manifest import Row
from attnmel_cli.data.tensors import normalize
from attnmel_cli.engine.distributed import SINGLE, Dist
from attnmel_cli.engine.inference import score_paths
from attnmel_cli.engine.optim import Optimisation
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.errors import DataError
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.losses import attnmel_loss, focal_loss
from attnmel_cli.models.attnmel import AttnMelNet

CHANNELS_LAST_DEVICES = ("cuda", "cpu")  # NHWC convolutions: faster on CPU (oneDNN) too


@dataclass
class Step:
    """One optimisation step on a batch from :class:`attnmel_cli.data.train_set.TrainSet`."""

    model: AttnMelNet | torch.nn.Module  # DistributedDataParallel under torchrun
    opt: Optimisation
    config: TrainConfig
    device: torch.device
    pre: PreprocessConfig  # the checkpoint's: mean and std normalise the batches
    amp_dtype: torch.dtype | None
    class_weight: Tensor | None = None  # (K,) α of the focal term (--class-weights)

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 images (N, 3, S, S) on the device → the network's normalised float input."""
        x = normalize(images, self.pre.mean, self.pre.std)
        if self.device.type in CHANNELS_LAST_DEVICES:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(self, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        """Images uint8 (N, 3, S, S), roi, known, labels → loss terms (4,) summed over images."""
        images, roi, known, labels = (t.to(self.device, non_blocking=True) for t in batch)
        x = self.normalise(images)  # normalised on the device
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits, maps = self.model(x)
        terms = attnmel_loss(  # Eq. 5
            logits, labels, maps, roi if self.config.roi != "none" else None, known,
            gamma=self.config.gamma, lambda1=self.config.lambda1, lambda2=self.config.lambda2,
            class_weight=self.class_weight,
        )
        self.opt.optimizer.zero_grad(set_to_none=True)
        self.opt.scaler.scale(terms.total).backward()
        self.opt.scaler.step(self.opt.optimizer)
        self.opt.scaler.update()
        if self.opt.per_step:
            self.opt.scheduler.step()
        parts = torch.stack([terms.total, terms.focal, terms.dice3, terms.dice4])
        return parts.detach() * len(labels)  # no host sync: read once per epoch


def train_epoch(
    model: torch.nn.Module, loader: Iterable[Sequence[Tensor]], step: Step,
    device: torch.device, dist: Dist = SINGLE, advance: Callable[[], None] = lambda: None,
) -> tuple[Tensor, int]:
    """One pass over ``loader``: the loss terms (4,) summed over every rank's samples, and how
    many samples that is."""
    model.train()
    sums, seen = torch.zeros(4, device=device), 0
    for batch in loader:
        sums += step(batch)  # type: ignore[arg-type]
        seen += len(batch[3])
        advance()
    sums, total = dist.sum(sums, seen)  # over all ranks
    return sums, int(total)


def validate(
    model: AttnMelNet, meta: CheckpointMeta, config: TrainConfig, rows: Sequence[Row],
    device: torch.device, workers: int, dist: Dist = SINGLE,
) -> dict[str, float]:
    """Validation focal loss, AP and AUC (scikit-learn's, paper §3.1) as ``predict`` scores.

    Under torchrun each rank scores a contiguous block of the split (with rank 0's weights and
    batch-norm statistics) and every rank gets all the probabilities, in order. No rows (a run
    on ``--train-splits train,val``): every figure is NaN.
    """
    if not rows:
        return {"val_loss": math.nan, "val_ap": math.nan, "val_auc": math.nan}
    lo, hi = dist.bounds(len(rows))
    paths = [config.target / r.image for r in rows[lo:hi]]
    local: list[tuple[float, str | None]] = [
        (math.nan if s.p_melanoma is None else s.p_melanoma, s.error)
        for s in score_paths(model, meta, paths, ScoringOptions(
            batch_size=2 * config.batch_size, workers=workers, prepared=True,
        ), device=device, nan_is_error=False)
    ]
    scored = dist.gather(local)
    failed = next((e for _, e in scored if e is not None), None)
    if failed is not None:
        raise DataError(failed)
    probs = np.array([p for p, _ in scored], dtype=float)
    labels = np.array([r.label for r in rows])
    p = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7)
    log_probs = torch.stack([(1 - p).log(), p.log()], dim=1)  # logits whose softmax is (1-p, p)
    return {
        "val_loss": float(focal_loss(log_probs, torch.from_numpy(labels), config.gamma)),
        # scikit-learn's, as attnmel_cli.evaluation.metrics reports them: the split holds both
        # classes (checked when training starts) and every probability is in [0, 1]
        "val_ap": float(average_precision_score(labels, probs)),
        "val_auc": float(roc_auc_score(labels, probs)),
    }
