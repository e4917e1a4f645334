"""An exponential moving average of the model's weights (EMA), the model that is validated, saved as ``best.pt``
and used by evaluate/predict when a run keeps one (``TrainConfig.ema``).

After every optimizer step, every floating-point tensor of the state dict (weights and BatchNorm statistics) moves
towards the trained model's: ``ema = d * ema + (1 - d) * model`` with ``d = min(decay, (1 + n) / (10 + n))`` after
``n`` updates (the warm-up of timm's ``ModelEmaV3``, so that early averages do not drag the initial weights along).
A high learning rate keeps the trained weights noisy; their average is what a lower rate would reach, which is why
the average validates better early in a run while the schedule's high rate still makes fast progress.
"""
from __future__ import annotations

import copy

import torch

from ..errors import ConfigError


class WeightEMA:
    """The averaged copy of ``model`` (``.module``, in eval mode, no gradients)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ConfigError(f"ema decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    def _pairs(self, model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        mine, theirs = self.module.state_dict(), model.state_dict()
        keys = [k for k, v in mine.items() if v.dtype.is_floating_point]
        return [mine[k] for k in keys], [theirs[k].detach() for k in keys]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average towards ``model`` (call after every optimizer step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema, cur = self._pairs(model)
        torch._foreach_lerp_(ema, cur, 1.0 - d)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
