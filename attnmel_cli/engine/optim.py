"""The optimiser of the paper's recipe (§3.1): SGD with Nesterov momentum, the step schedule of
the learning rate, and mixed precision on CUDA (with a loss scaler for float16 only)."""

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


@dataclass
class Optimisation:
    """SGD with Nesterov momentum, the step schedule and (float16 only) the loss scaler."""

    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.StepLR
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, model: AttnMelNet, config: TrainConfig, device: torch.device) -> Optimisation:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum,
            nesterov=config.nesterov, weight_decay=config.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_decay)
        fp16 = amp_dtype(config, device) == torch.float16
        return cls(optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=fp16))

    def load(self, state: RunState) -> None:
        """Continue from ``state`` (buffers move to the parameters' device)."""
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])
