"""Inference-time rewrite of a model: BatchNorm folded into the preceding convolution.

In eval mode BN is an affine map per channel, so conv → BN equals one conv with rescaled weights
and a bias: y = γ (W*x + b - μ) / sqrt(σ² + ε) + β. Folding removes one full pass over every
64-channel activation. Only for inference (the folded model has no BN statistics to train).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused.to(conv.weight.device, conv.weight.dtype)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) where every Conv2d directly followed by a BatchNorm2d inside an
    nn.Sequential is replaced by one folded Conv2d (and the BN by Identity)."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i] = _fold(conv, bn)
                seq[i + 1] = nn.Identity()
    return model
