"""Training losses (§2.2): focal loss, the batch Dice of Eq. 4, and their combination Eq. 5."""

from attnmel_cli.config import FOCAL_GAMMA, LAMBDA1, LAMBDA2
from attnmel_cli.losses.dice import batch_dice_loss, downsample_reference
from attnmel_cli.losses.focal import focal_loss
from attnmel_cli.losses.total import LossTerms, attnmel_loss

__all__ = [
    "FOCAL_GAMMA",
    "LAMBDA1",
    "LAMBDA2",
    "LossTerms",
    "attnmel_loss",
    "batch_dice_loss",
    "downsample_reference",
    "focal_loss",
]
