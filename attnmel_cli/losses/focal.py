"""Focal loss (Lin et al., ICCV 2017) on 2-class logits: the classification term of Eq. 5."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from attnmel_cli.config import FOCAL_GAMMA


def focal_loss(logits: Tensor, labels: Tensor, gamma: float = FOCAL_GAMMA) -> Tensor:
    """Mean over the batch of −(1 − p_t)^γ · log p_t.

    logits (N, C) raw scores, labels (N,) class indices → scalar. p_t is the softmax probability
    of the true class; γ = 0 gives plain cross-entropy. Computed in float32 (safe under autocast).
    """
    log_pt = -F.cross_entropy(logits.float(), labels, reduction="none")  # (N,)
    return (-((1 - log_pt.exp()) ** gamma) * log_pt).mean()
