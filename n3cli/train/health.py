"""Training health: how many feature channels of a network still carry a signal.

A channel is *silent* when its output after BatchNorm and ReLU is the same at every pixel of every
sample of a batch: either its ReLU never opens, or its BN input has no variance left. Its ReLU then
passes no gradient, so it stays silent. Under Adam with L2 weight decay (the paper's optimiser) the
decay term of such a channel is normalised like a gradient, which drives its weights to zero by about
the learning rate per step. ``n3 train`` logs :func:`silent_fraction` at each validation so that a
collapse is visible while it happens.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

#: An output range (max - min over batch and pixels) at or below this counts as constant.
SILENT_RANGE = 1e-6


def sequential_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, nn.Module]]:
    """Consecutive children (a, b) of every ``nn.Sequential`` in ``model``: a's output goes straight into b."""
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            kids = list(m.children())
            yield from zip(kids, kids[1:], strict=False)


def bn_relus(model: nn.Module) -> list[nn.ReLU]:
    """ReLU modules that directly follow a multi-channel ``BatchNorm2d`` in an ``nn.Sequential``."""
    return [b for a, b in sequential_pairs(model)
            if isinstance(a, nn.BatchNorm2d) and a.num_features > 1 and isinstance(b, nn.ReLU)]


@torch.no_grad()
def silent_by_layer(model: nn.Module, x: Tensor, threshold: float = SILENT_RANGE) -> dict[str, tuple[int, int]]:
    """(silent, total) channels of each BN + ReLU layer of ``model`` on the batch ``x`` (evaluated in eval
    mode), keyed by the ReLU's qualified name."""
    names = {id(m): n for n, m in model.named_modules()}
    counts: dict[str, tuple[int, int]] = {}

    def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        flat = out.detach().float().transpose(0, 1).flatten(1)  # (C, N*H*W)
        counts[names[id(module)]] = (int(((flat.amax(1) - flat.amin(1)) <= threshold).sum()), flat.shape[0])

    handles = [r.register_forward_hook(hook) for r in bn_relus(model)]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts


def silent_channels(model: nn.Module, x: Tensor, threshold: float = SILENT_RANGE) -> tuple[int, int]:
    """(silent, total) BN + ReLU channels of ``model`` on the batch ``x`` (evaluated in eval mode)."""
    layers = silent_by_layer(model, x, threshold).values()
    return sum(s for s, _ in layers), sum(t for _, t in layers)


def silent_fraction(model: nn.Module, x: Tensor, threshold: float = SILENT_RANGE) -> float:
    """Share of silent BN + ReLU channels on ``x`` (0: all carry a signal; nan: no such layers)."""
    silent, total = silent_channels(model, x, threshold)
    return silent / total if total else float("nan")
