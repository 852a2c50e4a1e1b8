"""How the networks run: arithmetic precision chosen from the hardware (one place for training and inference).

The local CNNs may run in bfloat16 / float16 under autocast; the N3 aggregation always computes in float32
(:func:`n3cli.nn.n3.full_precision`): distances cancel and the selection divides by small temperatures. The N3
blocks' embedding and temperature CNNs run in float32 in training and under float16, in bfloat16 in bfloat16
inference (:meth:`n3cli.nn.n3.N3Block2d.forward`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from .errors import N3Error

#: Precisions a user may ask for; ``auto`` picks per device (:func:`resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run natively (CUDA with bf16 support; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation argument
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device, cpu_auto: str = "fp32") -> str:
    """The precision ``auto`` or a forced choice means on ``device``: fp32, bf16 or fp16.

    ``auto``: fp16 on CUDA (measured lossless with the authors' checkpoints), ``cpu_auto`` on a CPU with native
    bfloat16 (the caller's measured choice), fp32 elsewhere. A forced bf16 / fp16 where the device has no such
    arithmetic is an error rather than a slow emulation."""
    if precision not in PRECISIONS:
        raise N3Error(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return cpu_auto if device.type == "cpu" and native_bf16(device) else "fp32"
    if precision != "fp32" and device.type not in ("cpu", "cuda"):
        raise N3Error(f"precision {precision}: {device.type} runs fp32 here")
    if precision == "bf16" and not native_bf16(device):
        what = "this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX)" if device.type == "cpu" else \
            "this GPU has no native bfloat16 arithmetic"
        raise N3Error(f"precision bf16: {what}")
    if precision == "fp16" and device.type != "cuda":
        raise N3Error(f"precision fp16 runs on CUDA only, not on {device.type}")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a resolved precision on ``device`` (a no-op for fp32)."""
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
