"""Recreate the bundled example images from scikit-image's public-domain samples.

camera.png / camera_noisy25.png: 256×256 crop of ``skimage.data.camera()``, and the same with Gaussian
noise σ = 25 (seed 0), quantised to 8 bit. astronaut_noisy15.png: 256×256 RGB crop with σ = 15.
Run: python examples/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

HERE = Path(__file__).resolve().parent


def noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float64) + rng.normal(0.0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def main() -> None:
    cam = data.camera()[64:320, 160:416]
    Image.fromarray(cam).save(HERE / "camera.png")
    Image.fromarray(noisy(cam, 25, 0)).save(HERE / "camera_noisy25.png")
    astro = data.astronaut()[0:256, 128:384]
    Image.fromarray(astro).save(HERE / "astronaut.png")
    Image.fromarray(noisy(astro, 15, 1)).save(HERE / "astronaut_noisy15.png")


if __name__ == "__main__":
    main()
