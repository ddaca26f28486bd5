"""Exponential moving average of model weights, the weights the LDM samples with."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """θ_ema ← decay · θ_ema + (1 − decay) · θ after every optimizer step.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) for the n-th update, so that
    the average is not dominated by the random initial weights in short runs.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach().float(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.num_updates = int(state["num_updates"])
