"""Weight averaging of the last epochs (Izmailov et al. 2018, "SWA"), a steadier model than the
single best epoch on a small validation split.

The floating-point weights of the chosen epochs are averaged; batch-norm running statistics are
then recomputed for the averaged weights with one pass over the training data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn


def average_state_dicts(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of floating tensors; integer buffers (BN batch counts) from the last."""
    if not states:
        raise ValueError("nothing to average")
    out: dict[str, Tensor] = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


@torch.no_grad()
def recalibrate_batch_norm(
    model: nn.Module, batches: Iterable[Tensor], forward: Callable[[Tensor], object]
) -> int:
    """Reset BN running statistics and re-estimate them as a cumulative average over ``batches``.

    ``forward(batch)`` runs the model on one (prepared, normalised) batch. Returns the number of
    batches seen; a model without batch norm is left untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    seen = 0
    for batch in batches:
        forward(batch)
        seen += 1
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return seen
