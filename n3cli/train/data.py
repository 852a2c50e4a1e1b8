"""Training data: folders of images decoded once into memory, random augmented crops."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import N3Error
from ..imaging.color import rgb2y

EXTENSIONS = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}


def _luma_u8(path: Path, luma: str = "L") -> np.ndarray:
    """Gray images as they are; colour images as their luma: ``"L"`` full-range BT.601 (denoising),
    ``"y"`` MATLAB rgb2ycbcr's Y in [16, 235] (super-resolution, evaluated on that Y); ``"rgb"``: every image as
    (3, H, W) RGB (gray ones repeated)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I", "F"):
            arr = np.asarray(im, dtype=np.float32)
            scale = 65535.0 if arr.max() > 255 else 255.0
            arr = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(arr[None], 3, 0) if luma == "rgb" else arr
        if luma == "rgb":
            return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
        if luma == "y":
            rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
            return np.clip(rgb2y(rgb)[..., 0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.asarray(im.convert("L"), dtype=np.uint8)


class ImageBank:
    """All training images of some folders, decoded once and kept in memory as 8-bit luma (or RGB, ``luma="rgb"``)."""

    def __init__(self, folders: Sequence[str | Path], min_size: int = 1, luma: str = "L",
                 what: str = "training") -> None:
        files: list[Path] = []
        for folder in folders:
            folder = Path(folder)
            if not folder.is_dir():
                raise N3Error(f"{what} data folder not found: {folder}")
            files += sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
        self.images: list[Tensor] = []
        for f in files:
            arr = _luma_u8(f, luma)
            if min(arr.shape[-2:]) >= min_size:
                self.images.append(torch.from_numpy(arr.copy()))
        if not self.images:
            raise N3Error(f"no usable {what} images (at least {min_size}×{min_size}) in: "
                          + ", ".join(str(f) for f in folders))
        # Sample images proportionally to their area, so every pixel is equally likely.
        self.weights = torch.tensor([float(im.numel()) for im in self.images], dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.images)

    def crops(self, n: int, size: int, gen: torch.Generator) -> Tensor:
        """n random size×size crops (n, C, size, size) in [0, 1], randomly flipped and rotated by 90°·r."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        out = torch.empty(n, self.channels, size, size)
        rnd = torch.randint(0, 1 << 30, (n, 4), generator=gen)
        for i in range(n):
            img = self.images[int(idx[i])].view(-1, *self.images[int(idx[i])].shape[-2:])
            h, w = img.shape[-2:]
            if h < size or w < size:  # small images are extended (edge replicated) to the crop size
                pad = (0, max(0, size - w), 0, max(0, size - h))
                img = torch.nn.functional.pad(img[None].float(), pad, mode="replicate")[0]
                h, w = img.shape[-2:]
            y0, x0 = int(rnd[i, 0]) % (h - size + 1), int(rnd[i, 1]) % (w - size + 1)
            crop = img[:, y0: y0 + size, x0: x0 + size].float()
            aug = int(rnd[i, 2]) % 8
            if aug & 4:
                crop = crop.flip(-1)
            out[i] = torch.rot90(crop, aug % 4, dims=(-2, -1))
        return out / 255.0

    @property
    def channels(self) -> int:
        """1 (luma) or 3 (RGB)."""
        return 3 if self.images[0].dim() == 3 else 1
