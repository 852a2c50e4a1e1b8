"""A small PNG encoder for 8- and 16-bit gray, gray+alpha, RGB and RGBA images.

Pillow cannot write 16-bit colour PNGs, so n3 writes every 16-bit PNG itself. Rows get the
adaptive filter choice of libpng (smallest sum of absolute filtered bytes), computed with numpy
block by block; ICC profiles go into an ``iCCP`` chunk and EXIF into ``eXIf``.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_IDAT_SIZE = 1 << 20
_BLOCK_BYTES = 1 << 22


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def filter_rows(rows: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """Filtered scanlines (filter byte first) for uint8 rows (n, rowbytes) following row ``prev``."""
    raw = rows.astype(np.int16)
    up = np.concatenate([prev[None].astype(np.int16), raw[:-1]], axis=0)
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    upleft = np.zeros_like(raw)
    upleft[:, bpp:] = up[:, :-bpp]
    candidates = np.stack([raw, raw - left, raw - up, raw - (left + up) // 2,
                           raw - _paeth(left, up, upleft)]).astype(np.uint8)
    cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
    best = np.argmin(cost, axis=0)
    chosen = candidates[best, np.arange(rows.shape[0])]
    return np.concatenate([best.astype(np.uint8)[:, None], chosen], axis=1)


def write_png(f: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None = None,
              exif: bytes | None = None, level: int = 6) -> None:
    """Write a uint8 or uint16 image (H, W) or (H, W, C), C in 1..4, as PNG to a binary file."""
    arr = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if arr.ndim != 3 or arr.shape[2] not in _COLOR_TYPES or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot encode a {arr.dtype} array of shape {pixels.shape} as PNG")
    h, w, c = arr.shape
    depth = 8 * arr.dtype.itemsize
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(">")).view(np.uint8).reshape(h, -1)
    f.write(_SIGNATURE)
    f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, _COLOR_TYPES[c], 0, 0, 0)))
    if icc_profile:
        f.write(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        f.write(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    comp = zlib.compressobj(level)
    pending = b""
    prev = np.zeros(data.shape[1], dtype=np.uint8)
    block = max(1, _BLOCK_BYTES // max(1, data.shape[1]))
    for y in range(0, h, block):
        rows = data[y:y + block]
        pending += comp.compress(filter_rows(rows, prev, c * depth // 8).tobytes())
        prev = rows[-1]
        while len(pending) >= _IDAT_SIZE:
            f.write(_chunk(b"IDAT", pending[:_IDAT_SIZE]))
            pending = pending[_IDAT_SIZE:]
    pending += comp.flush()
    for i in range(0, len(pending), _IDAT_SIZE):
        f.write(_chunk(b"IDAT", pending[i:i + _IDAT_SIZE]))
    f.write(_chunk(b"IEND", b""))
