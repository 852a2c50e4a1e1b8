"""MATLAB-compatible bicubic ``imresize`` (the degradation of the SR benchmarks).

Reproduces MATLAB's ``imresize(x, scale, 'bicubic')``: Keys' cubic kernel with a = -0.5, the kernel
widened by 1/scale when shrinking (antialiasing), MATLAB's index mapping
``u = x/scale + 0.5·(1 - 1/scale)`` and symmetric (mirror) boundary handling. Each axis is resized
separately by gathering the few contributing input pixels with precomputed weights.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

#: The super-resolution factors the shipped SR models are trained for.
SR_SCALES = (2, 3, 4)

_KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def contributions(in_len: int, out_len: int, scale: float, antialias: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Input indices (out_len, P) and weights (out_len, P, float64) of each output pixel on one axis."""
    width = _KERNEL_WIDTH
    if scale < 1 and antialias:
        width = _KERNEL_WIDTH / scale

        def kernel(t: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * t)
    else:
        kernel = cubic
    u = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, like MATLAB
    weights = kernel(u[:, None] - idx)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx - 1, 2 * in_len).astype(np.int64)]
    used = np.any(weights != 0, axis=0)
    idx, weights = idx[:, used], weights[:, used]
    idx.setflags(write=False)
    weights.setflags(write=False)
    return idx, weights


def _pair(v: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected one value or a pair, got {v!r}")
        return float(v[0]), float(v[1])
    return float(v), float(v)


def output_size(in_size: tuple[int, int], scale: float | tuple[float, float]) -> tuple[int, int]:
    """MATLAB's output size ceil(scale · in), forgiving floating-point noise (e.g. 255 · (1/3))."""
    sh, sw = _pair(scale)
    return (max(1, math.ceil(in_size[0] * sh - 1e-9)), max(1, math.ceil(in_size[1] * sw - 1e-9)))


def _resize_axis(x: Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    idx, w = contributions(x.shape[dim], out_len, scale, antialias)
    index = torch.tensor(idx, device=x.device)
    weight = torch.tensor(w, dtype=x.dtype, device=x.device)
    shape = [1] * x.dim()
    shape[dim] = out_len
    out = None
    for p in range(index.shape[1]):
        term = x.index_select(dim, index[:, p]) * weight[:, p].reshape(shape)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


def imresize(x: Tensor, scale: float | tuple[float, float] | None = None, *,
             size: tuple[int, int] | None = None, antialias: bool = True) -> Tensor:
    """Bicubic resize of the last two axes of a float tensor (..., H, W), as MATLAB ``imresize``.

    Give either ``scale`` (one factor or (sh, sw); output size ceil(scale · in)) or ``size``
    (out_h, out_w; the factors are then out/in). Computed in the tensor's dtype, no clipping.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if not torch.is_floating_point(x) or x.dim() < 2:
        raise ValueError(f"expected a float tensor (..., H, W), got {x.dtype} {tuple(x.shape)}")
    in_h, in_w = x.shape[-2], x.shape[-1]
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be positive, got {size}")
        sh, sw = out_h / in_h, out_w / in_w
    else:
        sh, sw = _pair(scale)  # type: ignore[arg-type]
        if sh <= 0 or sw <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_h, out_w = output_size((in_h, in_w), (sh, sw))
    if sh == 1 and sw == 1 and (out_h, out_w) == (in_h, in_w):
        return x.clone()
    # Resize the more-shrunk axis first (as MATLAB does): the intermediate image stays smaller.
    steps = [(-2, out_h, sh), (-1, out_w, sw)]
    steps.sort(key=lambda s: s[2])
    for dim, n, s in steps:
        if not (s == 1 and x.shape[dim] == n):
            x = _resize_axis(x, dim, n, s, antialias)
    return x


def imresize_np(img: np.ndarray, scale: float | tuple[float, float] | None = None, *,
                size: tuple[int, int] | None = None, antialias: bool = True) -> np.ndarray:
    """:func:`imresize` for numpy images (H, W) or (H, W, C).

    Float images keep their dtype. uint8 / uint16 images are resized in float64 and rounded and
    clipped back to their dtype, as MATLAB does for integer images.
    """
    arr = np.asarray(img)
    integer = np.issubdtype(arr.dtype, np.integer)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64 if integer else None))
    chw = t.permute(2, 0, 1) if arr.ndim == 3 else t
    out = imresize(chw, scale, size=size, antialias=antialias)
    out = out.permute(1, 2, 0) if arr.ndim == 3 else out
    res = out.numpy()
    if integer:
        info = np.iinfo(arr.dtype)
        res = np.clip(np.floor(res + 0.5), info.min, info.max).astype(arr.dtype)
    return np.ascontiguousarray(res)
