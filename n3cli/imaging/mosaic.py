"""Bayer mosaics as 2x2 colour planes: packing a (..., H, W) mosaic into (..., 4, H/2, W/2) and back.

Shared by camera raws (:mod:`n3cli.raw`) and the raw-like training data (:mod:`n3cli.imaging.noise`); works on
numpy arrays and torch tensors alike and needs no raw library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BAYER_PATTERNS", "bayer_offsets", "pack_bayer", "unpack_bayer"]

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


def bayer_offsets(pattern: str) -> list[tuple[int, int]]:
    """(row, col) offsets in the 2x2 tile of R, G1 (green in R's row), G2 (green in B's row), B."""
    pat = str(pattern).upper()
    if pat not in BAYER_PATTERNS:
        raise ValueError(f"unsupported CFA pattern {pattern!r}; expected one of {', '.join(BAYER_PATTERNS)}")
    pos = [(i // 2, i % 2) for i in range(4)]
    r, b = pos[pat.index("R")], pos[pat.index("B")]
    greens = [pos[i] for i in range(4) if pat[i] == "G"]
    g1 = next(q for q in greens if q[0] == r[0])
    g2 = next(q for q in greens if q[0] == b[0])
    return [r, g1, g2, b]


def _stack(parts: list[Any], like: Any) -> Any:
    if type(like).__module__.startswith("torch"):
        import torch

        return torch.stack(parts, dim=-3)
    return np.stack(parts, axis=-3)


def pack_bayer(mosaic: Any, pattern: str) -> Any:
    """(..., H, W) mosaic -> (..., 4, H//2, W//2) planes in the fixed order R, G1, G2, B.

    An odd last row/column is dropped (cropped). Works on numpy arrays and torch tensors.
    """
    h, w = mosaic.shape[-2] // 2 * 2, mosaic.shape[-1] // 2 * 2
    if h == 0 or w == 0:
        raise ValueError(f"mosaic of shape {tuple(mosaic.shape)} is too small to pack")
    return _stack([mosaic[..., dy:h:2, dx:w:2] for dy, dx in bayer_offsets(pattern)], mosaic)


def unpack_bayer(packed: Any, pattern: str, shape: tuple[int, int] | None = None) -> Any:
    """Inverse of :func:`pack_bayer`: (..., 4, h, w) -> (..., 2h, 2w).

    With ``shape=(H, W)`` where H is 2h or 2h+1 (same for W), the missing odd last row/column is padded with
    the row/column two before it, which has the same CFA colours.
    """
    if packed.shape[-3] != 4:
        raise ValueError(f"packed Bayer data needs 4 planes, got shape {tuple(packed.shape)}")
    h, w = packed.shape[-2], packed.shape[-1]
    hh, ww = shape if shape is not None else (2 * h, 2 * w)
    if hh not in (2 * h, 2 * h + 1) or ww not in (2 * w, 2 * w + 1) or (hh > 2 * h and h < 1):
        raise ValueError(f"cannot unpack {tuple(packed.shape)} to a {hh}x{ww} mosaic")
    out_shape = (*packed.shape[:-3], hh, ww)
    if type(packed).__module__.startswith("torch"):
        out = packed.new_empty(out_shape)
    else:
        out = np.empty(out_shape, dtype=packed.dtype)
    for c, (dy, dx) in enumerate(bayer_offsets(pattern)):
        out[..., dy:2 * h:2, dx:2 * w:2] = packed[..., c, :, :]
    if hh > 2 * h:
        out[..., 2 * h, : 2 * w] = out[..., 2 * h - 2, : 2 * w]
    if ww > 2 * w:
        out[..., :, 2 * w] = out[..., :, 2 * w - 2]
    return out
