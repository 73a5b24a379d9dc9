"""The training objective of Eq. 5: L = L_focal + λ1·L_D(A3, Ā3) + λ2·L_D(A4, Ā4)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attnmel_cli.config import FOCAL_GAMMA, LAMBDA1, LAMBDA2
from attnmel_cli.losses.dice import batch_dice_loss
from attnmel_cli.losses.focal import focal_loss


@dataclass(frozen=True)
class LossTerms:
    """Scalar tensors: ``total`` (Eq. 5), ``focal`` and the unweighted Dice terms of Eq. 4."""

    total: Tensor
    focal: Tensor
    dice3: Tensor
    dice4: Tensor


def attnmel_loss(
    logits: Tensor,
    labels: Tensor,
    maps: dict[str, Tensor],
    roi: Tensor | None = None,
    roi_known: Tensor | None = None,
    *,
    gamma: float = FOCAL_GAMMA,
    lambda1: float = LAMBDA1,
    lambda2: float = LAMBDA2,
    class_weight: Tensor | None = None,
) -> LossTerms:
    """Eq. 5 for one batch.

    logits (N, K), labels (N,) class indices, ``class_weight`` (K,) the focal term's α or
    ``None``; ``maps`` holds the attention maps ``pool3`` (N, 1, S/8, S/8) and ``pool4``
    (N, 1, S/16, S/16). ``roi`` (N, 1, S, S) in [0, 1] is the reference map Ā, or
    ``None`` for no regularisation (L = L_focal, Dice terms reported as 0). ``roi_known`` (N,)
    bool marks the images whose reference exists; the others are zeroed out of both Dice sums
    (they still count in the focal term). Masking by multiplication keeps the step free of
    host-device synchronisation.
    """
    focal = focal_loss(logits, labels, gamma, class_weight)
    if roi is None:
        zero = focal.new_zeros(())
        return LossTerms(focal, focal, zero, zero)
    a3, a4 = maps["pool3"], maps["pool4"]
    if roi_known is not None:
        keep = roi_known.to(a3.dtype).view(-1, 1, 1, 1)
        a3, a4, roi = a3 * keep, a4 * keep, roi * keep.to(roi.dtype)
    dice3 = batch_dice_loss(a3, roi)
    dice4 = batch_dice_loss(a4, roi)
    total = focal + lambda1 * dice3 + lambda2 * dice4  # Eq. 5
    return LossTerms(total, focal, dice3, dice4)
