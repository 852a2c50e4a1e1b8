"""Comparison images for ``n3 bench --save-images``: a strip of panels with captions, and a zoomed crop.

Each panel is an (H, W, C) image in [0, 1] (shown clipped) with a one-line caption drawn under it
with Pillow's default font. The zoom strip cuts the same 64×64 block (the one with the highest
variance in the reference image) out of every panel and enlarges it 4× with nearest neighbours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from ..imaging.color import to_gray
from ..imaging.io import write_image

CAPTION_HEIGHT = 16
GAP = 4
ZOOM_BLOCK = 64
ZOOM_FACTOR = 4

Panel = tuple[str, np.ndarray]


def _hwc(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32)
    return a[:, :, None] if a.ndim == 2 else a


def strip(panels: list[Panel]) -> np.ndarray:
    """The panels side by side (top-aligned, gaps black) with their captions below; float (H, W, C)."""
    imgs = [_hwc(p) for _, p in panels]
    channels = 3 if any(i.shape[2] == 3 for i in imgs) else 1
    imgs = [np.repeat(i, 3, axis=2) if i.shape[2] != channels else i for i in imgs]
    h = max(i.shape[0] for i in imgs)
    w = sum(i.shape[1] for i in imgs) + GAP * (len(imgs) - 1)
    canvas = np.zeros((h + CAPTION_HEIGHT, w, channels), dtype=np.uint8)
    x = 0
    for img in imgs:
        canvas[:img.shape[0], x:x + img.shape[1]] = np.floor(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        x += img.shape[1] + GAP
    pil = PILImage.fromarray(canvas[:, :, 0] if channels == 1 else canvas)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    x = 0
    for (caption, _), img in zip(panels, imgs, strict=True):
        draw.text((x + 2, h + 2), caption, fill=255 if channels == 1 else (255, 255, 255), font=font)
        x += img.shape[1] + GAP
    out = np.asarray(pil, dtype=np.float32) / 255.0
    return out[:, :, None] if out.ndim == 2 else out


def busiest_block(img: np.ndarray, size: int = ZOOM_BLOCK) -> tuple[int, int, int]:
    """(y, x, side) of the size×size block (on a half-overlapping grid) with the highest variance."""
    g = _hwc(img)
    g = to_gray(g)[:, :, 0] if g.shape[2] == 3 else g[:, :, 0]
    side = min(size, g.shape[0], g.shape[1])
    step = max(side // 2, 1)
    best, pos = -1.0, (0, 0)
    for y in range(0, g.shape[0] - side + 1, step):
        for x in range(0, g.shape[1] - side + 1, step):
            v = float(g[y:y + side, x:x + side].var())
            if v > best:
                best, pos = v, (y, x)
    return pos[0], pos[1], side


def zoom(img: np.ndarray, y: int, x: int, side: int, factor: int = ZOOM_FACTOR) -> np.ndarray:
    crop = _hwc(img)[y:y + side, x:x + side]
    return np.repeat(np.repeat(crop, factor, axis=0), factor, axis=1)


def save_comparison(folder: Path, stem: str, panels: list[Panel], reference: np.ndarray) -> list[Path]:
    """Write ``<stem>.png`` (full strip) and ``<stem>_zoom.png`` (zoomed crops) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x, side = busiest_block(reference)
    zoomed = [(caption, zoom(img, y, x, side)) for caption, img in panels]
    return [write_image(folder / f"{stem}.png", strip(panels), overwrite=True),
            write_image(folder / f"{stem}_zoom.png", strip(zoomed), overwrite=True)]
