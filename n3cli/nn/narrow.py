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


class _NarrowConv3x3(torch.autograd.Function):
    """y = conv3x3(x, W) + b with zero padding 1: forward and ∂L/∂W in C, ∂L/∂x by oneDNN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return native.conv3x3_narrow(x, weight.permute(0, 2, 3, 1).contiguous(),
                                     None if bias is None else bias.contiguous())

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [1, 1], [1, 1], False,
                                                         [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:  # (O, 3, 3, C) → (O, C, 3, 3), stored as the channels-last weight is
            grad_w = native.conv3x3_narrow_wgrad(x, grad).permute(0, 3, 1, 2)
            if not weight.is_contiguous(memory_format=torch.channels_last):
                grad_w = grad_w.contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


class _NarrowConv3x3Bf16(torch.autograd.Function):
    """The same under bf16 autocast: x, W and b rounded to bf16 as autocast would, products summed in float32, y in
    bf16; ∂L/∂W in C (float32, from the bf16 x and ∂L/∂y), ∂L/∂x by oneDNN (bf16, returned in x's dtype)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        xb, wb = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(xb, wb)
        ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
        ctx.weight_cl = weight.is_contiguous(memory_format=torch.channels_last)
        return native.conv3x3_narrow_bf16(xb, wb.permute(0, 2, 3, 1).contiguous(), _bf16_bias(bias, weight.shape[0]))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        xb, wb = ctx.saved_tensors
        grad = grad.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, xb, wb, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                         [True, False, False])[0].to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = native.conv3x3_narrow_wgrad(xb, grad).permute(0, 3, 1, 2)
            if not ctx.weight_cl:
                grad_w = grad_w.contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.float().sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def _bf16_bias(bias: Tensor | None, out_channels: int) -> Tensor:
    """The bias as autocast hands it to a bf16 convolution (rounded to bf16), in float32 for the kernel."""
    return torch.zeros(out_channels) if bias is None else bias.detach().to(torch.bfloat16).float()


class NarrowConv2d(nn.Conv2d):
    """A 3×3 convolution with few output channels whose float32 CPU passes, inference and training, run in C
    (several times faster there than oneDNN; the same sums in another order); ``nn.Conv2d`` otherwise."""

    def forward(self, x: Tensor) -> Tensor:
        if self._native_bf16_ok(x):  # what autocast would run: input, weight and bias rounded to bf16
            if self._needs_grad(x):
                return _NarrowConv3x3Bf16.apply(x, self.weight, self.bias)
            weight = self.weight.detach().to(torch.bfloat16).permute(0, 2, 3, 1).contiguous()
            return native.conv3x3_narrow_bf16(x.to(torch.bfloat16), weight, _bf16_bias(self.bias, self.out_channels))
        if self._native_ok(x):
            if self._needs_grad(x):
                return _NarrowConv3x3.apply(x, self.weight, self.bias)
            weight = self.weight.detach().permute(0, 2, 3, 1).contiguous()
            return native.conv3x3_narrow(x, weight, None if self.bias is None else self.bias.detach())
        return super().forward(x)

    def _needs_grad(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _native_ok(self, x: Tensor) -> bool:
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or x.shape[1] != self.in_channels:
            return False
        if not _narrow_shape(self) or any(p.device.type != "cpu" or p.dtype != torch.float32
                                          for p in self.parameters()):
            return False
        if not NATIVE_TRAINING and self._needs_grad(x):
            return False
        if torch.is_autocast_enabled("cpu"):  # the caller chose the convolutions' precision
            return False
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or getattr(fwAD, "_current_level", -1) >= 0:
            return False  # the C call would be a constant to a trace, and drop forward-mode tangents
        return x.is_contiguous(memory_format=torch.channels_last) and native.available()

    def _native_bf16_ok(self, x: Tensor) -> bool:
        """bf16 autocast on the CPU, where the bf16 kernels are built (AVX512-BF16)."""
        if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
            return False
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.dim() != 4:
            return False
        if x.shape[1] != self.in_channels or self.in_channels % 32 or not _narrow_shape(self):
            return False
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in self.parameters()):
            return False
        if not NATIVE_TRAINING and self._needs_grad(x):
            return False
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or getattr(fwAD, "_current_level", -1) >= 0:
            return False
        return x.is_contiguous(memory_format=torch.channels_last) and native.has_bf16_conv()


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
