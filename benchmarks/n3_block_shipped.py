"""The shipped ``n3net-nlf`` denoiser on Set12 at σ = 25 with the N3 block's original implementation
(``reference = True``) and the block one: largest output difference and PSNR of each.

Noise as in ``n3 bench`` (``noise.seed_for("Set12", file name, "25")``), whole images (no tiling).
Usage: python benchmarks/n3_block_shipped.py [--data /work/shared/data/Set12] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from n3cli.api import denoise, load_model
from n3cli.imaging import metrics, noise
from n3cli.imaging.color import to_gray
from n3cli.imaging.io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data/Set12")
    ap.add_argument("--weights", default="n3net-nlf")
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    restorer = load_model(args.weights, "denoise", "cpu")
    rows = []
    for path in sorted(Path(args.data).glob("*.png")):
        clean = to_gray(read_image(path).pixels)
        clean = clean[..., 0] if clean.ndim == 3 else clean
        gen = noise.generator(noise.seed_for("Set12", path.name, f"{args.sigma:g}"))
        noisy = noise.add_gaussian(torch.from_numpy(np.ascontiguousarray(clean)), args.sigma, gen).numpy()
        out, sec = {}, {}
        for reference in (True, False):
            for m in restorer.model.modules():
                if hasattr(m, "reference"):
                    m.reference = reference
            t0 = time.perf_counter()
            out[reference] = denoise(noisy, args.sigma, model=restorer, tile=4096)
            sec[reference] = time.perf_counter() - t0
        p_old, p_new = metrics.psnr(out[True], clean), metrics.psnr(out[False], clean)
        diff = float(np.abs(out[True] - out[False]).max())
        rows.append((path.name, diff, p_old, p_new))
        print(f"{path.name}: {clean.shape[1]}x{clean.shape[0]} max |old - new| {diff:.2e}  PSNR old {p_old:.4f} "
              f"new {p_new:.4f} (diff {p_new - p_old:+.2e} dB)  time old {sec[True]:.2f} s new {sec[False]:.2f} s",
              flush=True)
    print(f"Set12 σ={args.sigma:g}: mean PSNR old {np.mean([r[2] for r in rows]):.4f} new "
          f"{np.mean([r[3] for r in rows]):.4f}; largest |old - new| {max(r[1] for r in rows):.2e}; "
          f"largest |PSNR diff| {max(abs(r[3] - r[2]) for r in rows):.2e} dB")


if __name__ == "__main__":
    main()
