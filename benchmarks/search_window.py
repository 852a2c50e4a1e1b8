"""PSNR of a denoiser with a larger N3 search window at inference than it was trained with.

The N3 blocks match each 10×10 query patch against a window of patch positions (15×15 in the paper and
in training: the whole 80×80 crop). This script sets the window of every N3 block to each value given and
denoises the same noisy images as ``n3 bench`` (same seeds), printing each image's PSNR and time.
Usage: python benchmarks/search_window.py IMAGE... [--weights n3net-nlf] [--windows 15 21 31]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from n3cli import api
from n3cli.bench.run import make_noisy
from n3cli.imaging.color import to_gray
from n3cli.imaging.io import read_image
from n3cli.imaging.metrics import psnr
from n3cli.nn.n3 import N3Aggregation2d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", type=Path, help="clean images; the noise seed uses <folder name>/<file>")
    ap.add_argument("--weights", default="n3net-nlf")
    ap.add_argument("--windows", type=int, nargs="+", default=[15, 21, 31])
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    restorer = api.load_model(args.weights, "denoise", "cpu")
    blocks = [m for m in restorer.model.modules() if isinstance(m, N3Aggregation2d)]
    totals = dict.fromkeys(args.windows, 0.0)
    for path in args.images:
        # (H, W, 1) luma, as n3 bench loads a gray set; the noise seed n3 bench uses (dataset = the folder's name)
        clean = to_gray(read_image(path).pixels[..., :3]).astype(np.float32)
        noisy = make_noisy(clean, args.sigma, path.parent.name, path.name)[..., 0]
        clean = clean[..., 0]
        cells = []
        for w in args.windows:
            for b in blocks:
                b.window = w
            t0 = time.perf_counter()
            out = api.denoise(noisy, args.sigma, model=restorer)
            value = psnr(out, clean)
            totals[w] += value
            cells.append(f"window {w}: {value:.3f} dB ({time.perf_counter() - t0:.0f} s)")
        print(f"{path.parent.name}/{path.name}  " + "  ".join(cells), flush=True)
    n = len(args.images)
    print("mean  " + "  ".join(f"window {w}: {totals[w] / n:.3f} dB" for w in args.windows))


if __name__ == "__main__":
    main()
