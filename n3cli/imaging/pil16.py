"""Lossless 16-bit colour decoding through Pillow.

Pillow decodes 16-bit RGB(A) and gray+alpha PNGs (and TIFFs) into 8-bit modes, keeping only the
high byte of each sample. Its decoders still unfilter and decompress the full samples; only the
final unpacking drops a byte. Decoding once more with the opposite byte order's unpacker yields the
low bytes (RGB/RGBA), and 16-bit gray+alpha pixels (4 bytes) unpack whole as 8-bit RGBA.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image as PILImage

_OTHER_BYTE = {"RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B",
               "RGBA;16B": "RGBA;16L", "RGBA;16L": "RGBA;16B"}
_GRAY_ALPHA = "LA;16B"


def _rawmode(tile: tuple) -> str | None:
    args = tile[3]  # (codec, extents, offset, args): a plain tuple before Pillow 11
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _set_rawmode(im: PILImage.Image, rawmode: str) -> None:
    tiles = []
    for t in im.tile:
        args = rawmode if isinstance(t[3], str) else (rawmode, *t[3][1:])
        tiles.append(t._replace(args=args) if hasattr(t, "_replace") else (*t[:3], args))
    im.tile = tiles


def wide_rawmode(im: PILImage.Image) -> str | None:
    """The 16-bit colour raw mode Pillow would truncate to 8 bits, or None."""
    modes = {_rawmode(t) for t in getattr(im, "tile", None) or []}
    if len(modes) != 1:
        return None
    mode = modes.pop()
    return mode if mode in _OTHER_BYTE or mode == _GRAY_ALPHA else None


def load_wide(open_image: Callable[[], PILImage.Image]) -> np.ndarray:
    """Decode a 16-bit colour image to uint16 (H, W, C); ``open_image`` opens it afresh each time."""
    with open_image() as im:
        mode = wide_rawmode(im)
        if mode is None:
            raise ValueError("not a 16-bit colour image")
        if mode == _GRAY_ALPHA:
            _set_rawmode(im, "RGBA")
            im.load()
            b = np.asarray(im).astype(np.uint16)
            return np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], axis=-1)
        im.load()
        high = np.asarray(im).astype(np.uint16)  # the raw mode's unpacker keeps the high bytes
    with open_image() as im:
        _set_rawmode(im, _OTHER_BYTE[mode])
        im.load()
        low = np.asarray(im).astype(np.uint16)
    return (high << 8) | low
