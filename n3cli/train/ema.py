"""An exponential moving average of a network's weights during training (Polyak averaging).

While the learning rate is high the weights jitter around a good region; their running average sits
nearer its centre and usually measures better than the last step, without shortening the schedule.
``n3 train --ema 0.999`` keeps one in every checkpoint and validates it beside the raw weights;
``n3 weights export --ema`` ships it. Batch-norm statistics are not averaged: they are recomputed
for the averaged weights (precise BN) before any measurement or export.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class WeightAverage:
    """θ_avg ← d·θ_avg + (1 - d)·θ after each step, with d = min(decay, (1 + n) / (10 + n)) at the n-th
    update, so that an average started from a fresh initialisation forgets it quickly."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(list(self.module.parameters()), list(model.parameters()), 1.0 - self.current_decay())
        self.updates += 1

    @torch.no_grad()
    def averaged(self, model: nn.Module) -> nn.Module:
        """The averaged network, with the buffers (BN running statistics) of ``model`` copied in."""
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
        return self.module

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        return self.averaged(model).state_dict()

    def load_state_dict(self, state: dict[str, Tensor], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates
