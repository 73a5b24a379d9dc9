"""The optimiser: the paper's SGD with Nesterov momentum and step schedule (§3.1), or AdamW with a
one-cycle schedule (the fine-tuning recipe of the pretrained EfficientNet-Lite default model);
mixed precision on CUDA (with a loss scaler for float16 only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnmel_cli.config import TrainConfig
from attnmel_cli.io.run_state import RunState
from attnmel_cli.models.attnmel import AttnMelNet


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bfloat16 on CUDA where supported, else float16 (with loss scaling); None off CUDA."""
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "onecycle")


@dataclass
class Optimisation:
    """Optimiser, learning-rate schedule and (float16 only) the loss scaler.

    ``per_step``: the schedule advances after every optimisation step (onecycle), otherwise
    after every epoch (step: divide by ``lr_decay`` every ``lr_step`` epochs).
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    per_step: bool = False

    @classmethod
    def build(
        cls, model: AttnMelNet, config: TrainConfig, device: torch.device, steps_per_epoch: int
    ) -> Optimisation:
        if config.optimizer == "adamw":
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        else:
            optimizer = torch.optim.SGD(
                model.parameters(), lr=config.lr, momentum=config.momentum,
                nesterov=config.nesterov, weight_decay=config.weight_decay,
            )
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if config.schedule == "onecycle":  # warm-up over 30 % of the steps, then cosine to ~0
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
        else:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_decay)
        fp16 = amp_dtype(config, device) == torch.float16
        return cls(optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=fp16),
                   per_step=config.schedule == "onecycle")

    def load(self, state: RunState) -> None:
        """Continue from ``state`` (buffers move to the parameters' device)."""
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])
