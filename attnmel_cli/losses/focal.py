"""Focal loss (Lin et al., ICCV 2017) on K-class logits: the classification term of Eq. 5."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from attnmel_cli.config import FOCAL_GAMMA


def focal_loss(
    logits: Tensor, labels: Tensor, gamma: float = FOCAL_GAMMA, weight: Tensor | None = None
) -> Tensor:
    """Mean over the batch of −(1 − p_t)^γ · log p_t (weighted mean with ``weight``).

    logits (N, C) raw scores, labels (N,) class indices → scalar. p_t is the softmax probability
    of the true class; γ = 0 gives plain cross-entropy. ``weight`` (C,): per-class weights
    α_c, the mean then Σ α_t·l / Σ α_t as in ``cross_entropy``. Computed in float32 (safe under
    autocast).
    """
    log_pt = -F.cross_entropy(logits.float(), labels, reduction="none")  # (N,)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    if weight is None:
        return loss.mean()
    alpha = weight.to(loss)[labels]
    return (alpha * loss).sum() / alpha.sum().clamp_min(1e-12)
