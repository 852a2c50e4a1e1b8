"""Apply an image-to-image function on overlapping tiles and blend them without seams.

Tiles are spread evenly so that neighbours overlap by at least ``overlap`` pixels; border tiles sit
inside the image (no padding). Each tile's weight is zero within ``margin`` pixels of an edge it
shares with a neighbour and then rises with a raised-cosine ramp across the rest of the overlap, so
the blend is smooth; where the weights of neighbours cross they sum to one. Weights are separable,
so the normaliser is the outer product of two 1-D sums and no full-size weight map is kept.

Exactness: if ``fn`` has a receptive radius r (output pixel depends on inputs at most r pixels
away, zero padding at the image border) and ``margin >= r``, the result equals ``fn(x)``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


class TileBox(NamedTuple):
    """A tile: rows y0:y1 and columns x0:x1 of the image."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


#: A tile's side, or its (rows, columns).
TileSize = int | tuple[int, int]


def tile_dims(tile: TileSize) -> tuple[int, int]:
    """(rows, columns) of a tile given as one side (any integer type) or as a pair."""
    if isinstance(tile, tuple | list):
        return operator.index(tile[0]), operator.index(tile[1])
    side = operator.index(tile)
    return side, side


def _check(tile: TileSize, overlap: int, margin: int) -> None:
    tile = min(tile_dims(tile))
    if tile < 1:
        raise ValueError(f"tile size must be at least 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap {overlap} for tile {tile}")
    if margin < 0 or (overlap > 0 and 2 * margin >= overlap) or (overlap == 0 and margin != 0):
        raise ValueError(f"margin must be in [0, overlap/2), got margin {margin} for overlap {overlap}")


def axis_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of length n (evenly spread, the last ends at n)."""
    if n <= tile:
        return [0]
    count = math.ceil((n - tile) / (tile - overlap)) + 1
    step = (n - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def plan_tiles(h: int, w: int, tile: TileSize, overlap: int) -> list[TileBox]:
    """The tile boxes (``tile``: a side, or rows and columns) covering an h x w image, row by row; one box if the
    image fits in a tile."""
    _check(tile, overlap, 0)
    rows, cols = tile_dims(tile)
    th, tw = min(rows, h), min(cols, w)
    return [TileBox(y, y + th, x, x + tw)
            for y in axis_starts(h, rows, overlap) for x in axis_starts(w, cols, overlap)]


def _ramp(length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Raised-cosine ramp rising from 0 to 1 over ``length`` samples (both ends excluded)."""
    t = (torch.arange(length, device=device, dtype=torch.float64) + 0.5) / length
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(dtype)


def axis_weights(starts: list[int], size: int, margin: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """1-D blending weights (length ``size``) of each tile along one axis."""
    device = torch.device(device)
    out = []
    for i, s in enumerate(starts):
        wt = torch.ones(size, device=device, dtype=dtype)
        if i > 0:  # rise across the band shared with the previous tile
            a, b = margin, starts[i - 1] + size - s - margin
            wt[:a] = 0
            if b > a:
                wt[a:b] *= _ramp(b - a, device, dtype)
        if i < len(starts) - 1:  # fall across the band shared with the next tile
            a, b = starts[i + 1] - s + margin, size - margin
            wt[b:] = 0
            if b > a:
                wt[a:b] *= _ramp(b - a, device, dtype).flip(0)
        out.append(wt)
    return out


def tiled_apply(fn: Callable[[Tensor], Tensor], x: Tensor, tile: TileSize, overlap: int,
                progress: Callable[[int, int], None] | None = None, margin: int | None = None) -> Tensor:
    """``fn(x)`` for x of shape (N, C, H, W), computed tile by tile (``tile``: a side, or rows and columns) and
    blended.

    ``fn`` must keep the spatial size (its channel count may change). ``margin`` (default
    overlap // 4) is the number of pixels at each shared tile edge that get zero weight; use the
    receptive radius of ``fn`` for an exact result. ``progress(done, total)`` is called after
    every tile. Holds the output plus one tile's input and output at a time.
    """
    if x.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    margin = overlap // 4 if margin is None else margin
    _check(tile, overlap, margin)
    h, w = x.shape[-2:]
    boxes = plan_tiles(h, w, tile, overlap)
    if len(boxes) == 1:
        y = fn(x)
        if progress is not None:
            progress(1, 1)
        return y
    rows, cols = tile_dims(tile)
    ys, xs = axis_starts(h, rows, overlap), axis_starts(w, cols, overlap)
    th, tw = boxes[0].y1 - boxes[0].y0, boxes[0].x1 - boxes[0].x0
    out: Tensor | None = None
    wy: list[Tensor] = []
    wx: list[Tensor] = []
    for k, box in enumerate(boxes):
        ry, rx = box.slices
        y = fn(x[:, :, ry, rx])
        if y.dim() != 4 or y.shape[0] != x.shape[0] or y.shape[-2:] != (th, tw):
            raise ValueError(f"fn must keep the batch and spatial size: {tuple(x[:, :, ry, rx].shape)} "
                             f"gave {tuple(y.shape)}")
        if out is None:
            out = torch.zeros((x.shape[0], y.shape[1], h, w), dtype=y.dtype, device=y.device)
            wy = axis_weights(ys, th, margin, y.device, y.dtype)
            wx = axis_weights(xs, tw, margin, y.device, y.dtype)
        weight = wy[ys.index(box.y0)][:, None] * wx[xs.index(box.x0)][None, :]
        out[:, :, ry, rx] += y * weight
        del y
        if progress is not None:
            progress(k + 1, len(boxes))
    assert out is not None
    norm_y = torch.zeros(h, dtype=out.dtype, device=out.device)
    norm_x = torch.zeros(w, dtype=out.dtype, device=out.device)
    for s, wt in zip(ys, wy, strict=True):
        norm_y[s:s + th] += wt
    for s, wt in zip(xs, wx, strict=True):
        norm_x[s:s + tw] += wt
    out /= norm_y[:, None] * norm_x[None, :]
    return out
