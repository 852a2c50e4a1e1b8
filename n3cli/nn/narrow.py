"""Narrow 3×3 convolutions (N3Net's 64 → 8 and 64 → 1, the last layer of DnCNN and VDSR) through C kernels.

oneDNN runs a 3×3 convolution with few output channels several times below its rate for wide ones, forward and
for the weights' gradient (docs/speed.md). :class:`NarrowConv2d` is an ``nn.Conv2d`` (the same parameters and
state dict) that runs float32 on the CPU, channels-last, through :func:`n3cli.nn.native.conv3x3_narrow` and, in
training, :func:`n3cli.nn.native.conv3x3_narrow_wgrad` (the input's gradient stays with oneDNN, which runs that
one at its rate); under bf16 autocast, where the CPU has AVX512-BF16, likewise through
:func:`n3cli.nn.native.conv3x3_narrow_bf16` (and the weights' gradient from bf16 operands); everything else (fp16
autocast, other devices and dtypes, NCHW storage) as ``nn.Conv2d``. The C training path is differentiable once
(no ``create_graph=True`` through it; ``NATIVE_TRAINING = False`` restores ``nn.Conv2d``'s double backward).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import native

#: Train narrow convolutions through the C kernels (forward and the weights' gradient); False runs ``nn.Conv2d``
#: (the reference the tests compare against). Inference uses the kernels either way.
NATIVE_TRAINING = True


def _convolve(x: Tensor, weight: Tensor, bias: Tensor | None, bf16: bool) -> tuple[Tensor, Tensor, Tensor]:
    """y = conv3x3(x, W) + b with zero padding 1 in C, and the operands it used: in float32, or under bf16 autocast
    with x, W and b rounded to bf16 as autocast would (products summed in float32, y in bf16)."""
    if bf16:
        x, weight = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        b = torch.zeros(weight.shape[0]) if bias is None else bias.detach().to(torch.bfloat16).float()
        return native.conv3x3_narrow_bf16(x, weight.permute(0, 2, 3, 1).contiguous(), b), x, weight
    b = None if bias is None else bias.detach().contiguous()
    return native.conv3x3_narrow(x, weight.detach().permute(0, 2, 3, 1).contiguous(), b), x, weight


class _NarrowConv3x3(torch.autograd.Function):
    """:func:`_convolve` with its backward: ∂L/∂W in C (float32, from the operands the forward used), ∂L/∂x by
    oneDNN (in the forward's precision, returned in x's dtype)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, bf16: bool) -> Tensor:
        out, xs, ws = _convolve(x, weight, bias, bf16)
        ctx.save_for_backward(xs, ws)
        ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
        ctx.weight_cl = weight.is_contiguous(memory_format=torch.channels_last)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        xs, ws = ctx.saved_tensors
        grad = grad.to(xs.dtype).contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, xs, ws, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                         [True, False, False])[0].to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:  # (O, 3, 3, C) → (O, C, 3, 3), stored as the channels-last weight is
            grad_w = native.conv3x3_narrow_wgrad(xs, grad).permute(0, 3, 1, 2)
            if not ctx.weight_cl:
                grad_w = grad_w.contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.float().sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class NarrowConv2d(nn.Conv2d):
    """A 3×3 convolution with few output channels whose CPU passes in float32 and under bf16 autocast, inference and
    training, run in C (several times faster there than oneDNN; the same sums in another order); ``nn.Conv2d``
    otherwise."""

    def forward(self, x: Tensor) -> Tensor:
        bf16 = self._kernel(x)
        if bf16 is None:
            return super().forward(x)
        if self._needs_grad(x):
            return _NarrowConv3x3.apply(x, self.weight, self.bias, bf16)
        return _convolve(x, self.weight, self.bias, bf16)[0]

    def _needs_grad(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _kernel(self, x: Tensor) -> bool | None:
        """Which C kernel serves this call: False the float32 one (no autocast, float32 x), True the bf16 one (bf16
        autocast, float32 or bf16 x, input channels a multiple of 32, a CPU with AVX512-BF16), None neither."""
        if torch.is_autocast_enabled("cpu"):  # the caller chose the convolutions' precision
            bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16
            if not bf16 or x.dtype not in (torch.float32, torch.bfloat16) or self.in_channels % 32:
                return None
        elif x.dtype == torch.float32:
            bf16 = False
        else:
            return None
        if x.device.type != "cpu" or x.dim() != 4 or x.shape[1] != self.in_channels or not _narrow_shape(self):
            return None
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in self.parameters()):
            return None
        if not NATIVE_TRAINING and self._needs_grad(x):
            return None
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or getattr(fwAD, "_current_level", -1) >= 0:
            return None  # the C call would be a constant to a trace, and drop forward-mode tangents
        if not x.is_contiguous(memory_format=torch.channels_last):
            return None
        return bf16 if (native.has_bf16_conv() if bf16 else native.available()) else None


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
