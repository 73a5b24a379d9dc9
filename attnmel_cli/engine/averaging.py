"""Weight averaging of the last epochs (Izmailov et al. 2018, "SWA"), a steadier model than the
single best epoch on a small validation split.

The floating-point weights of the chosen epochs are averaged; batch-norm running statistics are
then recomputed for the averaged weights with one pass over the training data
(:func:`average_last`: ``train --average-last K``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from attnmel_cli.config import TrainConfig
from attnmel_cli.data.manifest import Row
from attnmel_cli.engine.distributed import SINGLE, Dist
from attnmel_cli.engine.epoch import Step, validate
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.checkpoint import CheckpointMeta, read_tensors
from attnmel_cli.io.model_checkpoint import save_checkpoint
from attnmel_cli.io.run_dir import AVERAGED, epoch_name
from attnmel_cli.models.attnmel import AttnMelNet

log = logging.getLogger("attnmel")


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


def average_last(
    config: TrainConfig, model: AttnMelNet, meta: CheckpointMeta, step: Step,
    loader: Iterable[Sequence[Tensor]], val_rows: Sequence[Row], device: torch.device,
    workers: int, dist: Dist = SINGLE,
) -> None:
    """Average the last ``config.average_last`` epochs' weights, recompute BN statistics on the
    training data, validate, and save ``averaged.safetensors``.

    Under torchrun rank 0 reads the epochs' weights and sends the average to the others; each
    rank re-estimates the statistics on its share of the data and the ranks average them.
    """
    first = config.epochs - config.average_last + 1
    epochs = list(range(first, config.epochs + 1))
    if dist.is_main:
        missing = [e for e in epochs if not (config.out / epoch_name(e)).is_file()]
        if missing:
            raise AttnMelError(
                f"{config.out}: --average-last {config.average_last} needs the weights of epochs "
                f"{', '.join(map(str, missing))}, which this run did not keep (was --average-last "
                "raised on --resume?)"
            )
        states = [read_tensors(config.out / epoch_name(e))[0] for e in epochs]
        model.load_state_dict(average_state_dicts(states), strict=True)
    model.to(device)
    dist.broadcast_state(model)
    recalibrate_batch_norm(model, loader, lambda batch: model(step.normalise(batch[0].to(device))))
    dist.average_buffers(model)
    val = validate(model, meta, config, val_rows, device, workers, dist)
    meta.metrics = {"averaged_epochs": epochs, **val}
    if dist.is_main:
        save_checkpoint(config.out / AVERAGED, model, meta)
    log.info("averaged epochs %d–%d: val AP %.4f  AUC %.4f  → %s", first, config.epochs,
             val["val_ap"], val["val_auc"], config.out / AVERAGED)
