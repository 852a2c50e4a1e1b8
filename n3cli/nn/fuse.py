"""Inference-time rewrites of a model: BatchNorm folded into the preceding convolution; narrow convolutions
through the C kernel.

In eval mode BN is an affine map per channel, so conv → BN equals one conv with rescaled weights
and a bias: y = γ (W*x + b - μ) / sqrt(σ² + ε) + β. Folding removes one full pass over every
64-channel activation. Only for inference (the folded model has no BN statistics to train).
"""

from __future__ import annotations

import copy

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from . import native


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


class NarrowConv2d(nn.Conv2d):
    """A 3×3 convolution with few output channels (N3Net's 64 → 8 and 64 → 1) that runs float32 inference on the CPU
    through :func:`n3cli.nn.native.conv3x3_narrow` (several times faster there than oneDNN; the same sums in
    another order) and everything else (autograd, autocast, other devices and dtypes) as ``nn.Conv2d``."""

    def forward(self, x: Tensor) -> Tensor:
        if self._native_ok(x):
            weight = self.weight.detach().permute(0, 2, 3, 1).contiguous()
            return native.conv3x3_narrow(x, weight, None if self.bias is None else self.bias.detach())
        return super().forward(x)

    def _native_ok(self, x: Tensor) -> bool:
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or x.shape[1] != self.in_channels:
            return False
        if not _narrow_shape(self) or any(p.device.type != "cpu" or p.dtype != torch.float32
                                          for p in self.parameters()):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return False
        if torch.is_autocast_enabled("cpu"):  # the caller chose the convolutions' precision
            return False
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or getattr(fwAD, "_current_level", -1) >= 0:
            return False  # the C call would be a constant to a trace, and drop forward-mode tangents
        return x.is_contiguous(memory_format=torch.channels_last) and native.available()


def _narrow_shape(conv: nn.Conv2d) -> bool:
    """What the kernel computes: 3×3, stride 1, zero padding 1, input channels a multiple of 16, few outputs."""
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and conv.in_channels % 16 == 0 and conv.in_channels <= native.NARROW_MAX_IN
            and 1 <= conv.out_channels <= native.NARROW_MAX_OUT)


def _narrow_eligible(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and _narrow_shape(conv)


def use_narrow_convs(model: nn.Module) -> nn.Module:
    """Turn every eligible ``nn.Conv2d`` of ``model`` (3×3, stride 1, padding 1, ≤ 8 outputs) into a
    :class:`NarrowConv2d` in place (the same parameters); returns the model."""
    for m in model.modules():
        if _narrow_eligible(m):
            m.__class__ = NarrowConv2d  # a subclass without state of its own: the parameters stay as they are
    return model
