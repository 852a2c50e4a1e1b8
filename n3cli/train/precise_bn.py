"""Batch-norm statistics recomputed from many training batches ("precise BN").

The running averages of BN (momentum 0.1: about the last ten batches) lag behind the weights while the
learning rate is high, and swing with the noise levels drawn by a conditional run. Inference folds the
statistics into the convolutions, so they are recomputed before every validation and before weights are
exported (figures in docs/training.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .frozen_bn import is_frozen


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: Iterable[Tensor | tuple[Tensor, ...]]) -> int:
    """Replace every BN layer's running mean/variance by their average over ``inputs`` (train-mode
    forward passes, equal weight per batch; a tuple holds forward's arguments, e.g. ``(x, noise)``);
    parameters and frozen layers (:mod:`n3cli.train.frozen_bn`) are untouched. Returns the batch count."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not is_frozen(m)]
    batches = iter(inputs)
    first = next(batches, None)
    if not bns or first is None:  # nothing to do, or no data: keep the statistics as they are
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    n = 0
    try:
        for x in itertools.chain([first], batches):
            model(*x) if isinstance(x, tuple) else model(x)
            n += 1
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return n
