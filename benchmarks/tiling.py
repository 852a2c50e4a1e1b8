"""Tiled versus whole-image output of a denoiser on a 512×512 image (seam check).

Usage: python benchmarks/tiling.py --weights MODEL [--image PATH] [--tiles 256 192 128] [--overlap 96]
Prints the mean and max absolute difference (in 1/255 units) for each tile size.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from n3cli import api
from n3cli.imaging.io import read_image
from n3cli.imaging.noise import add_gaussian, generator, seed_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--image", default="../shared/data/Set12/08.png")
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 192, 128])
    ap.add_argument("--overlap", type=int, default=api.DEFAULT_OVERLAP)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clean = read_image(args.image).pixels[..., 0]
    noisy = add_gaussian(torch.from_numpy(clean), args.sigma, generator(seed_for(args.image, args.sigma))).numpy()
    model = api.load_model(args.weights, device="cpu")
    whole = api.denoise(noisy, args.sigma, model=model, tile=4096)
    for tile in args.tiles:
        tiled = api.denoise(noisy, args.sigma, model=model, tile=tile, overlap=args.overlap)
        diff = np.abs(tiled - whole) * 255
        print(f"tile {tile}, overlap {min(args.overlap, tile // 2 - 1)}: mean |tiled - whole| = "
              f"{diff.mean():.4f}/255, max {diff.max():.3f}/255")


if __name__ == "__main__":
    main()
