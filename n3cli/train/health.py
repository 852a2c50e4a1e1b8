"""Training health: how many feature channels of a network still carry a signal.

A channel is *silent* when its output after BatchNorm and ReLU is the same at every pixel of every
sample of a batch: either its ReLU never opens, or its BN input has no variance left. Its ReLU then
passes no gradient, so it stays silent. Under Adam with L2 weight decay (the paper's optimiser) the
decay term of such a channel is normalised like a gradient, which drives its weights to zero by about
the learning rate per step. ``n3 train`` logs :func:`silent_fraction` at each validation so that a
collapse is visible while it happens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: An output range (max - min over batch and pixels) at or below this counts as constant.
SILENT_RANGE = 1e-6


def bn_relus(model: nn.Module) -> list[nn.ReLU]:
    """ReLU modules that directly follow a multi-channel ``BatchNorm2d`` in an ``nn.Sequential``."""
    found = []
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            kids = list(m.children())
            for a, b in zip(kids, kids[1:], strict=False):
                if isinstance(a, nn.BatchNorm2d) and a.num_features > 1 and isinstance(b, nn.ReLU):
                    found.append(b)
    return found


@torch.no_grad()
def silent_channels(model: nn.Module, x: Tensor, threshold: float = SILENT_RANGE) -> tuple[int, int]:
    """(silent, total) BN + ReLU channels of ``model`` on the batch ``x`` (evaluated in eval mode)."""
    counts = [0, 0]

    def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        flat = out.detach().float().transpose(0, 1).flatten(1)  # (C, N*H*W)
        counts[0] += int(((flat.amax(1) - flat.amin(1)) <= threshold).sum())
        counts[1] += flat.shape[0]

    handles = [r.register_forward_hook(hook) for r in bn_relus(model)]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts[0], counts[1]


def silent_fraction(model: nn.Module, x: Tensor, threshold: float = SILENT_RANGE) -> float:
    """Share of silent BN + ReLU channels on ``x`` (0: all carry a signal; nan: no such layers)."""
    silent, total = silent_channels(model, x, threshold)
    return silent / total if total else float("nan")
