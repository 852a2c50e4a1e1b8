"""Does denoising shift local means? Bias of the raw denoiser, per CFA plane and brightness.

A denoiser should remove zero-mean noise without moving the local mean of the signal. On a real raw
the noisy mosaic keeps values below the black level (nothing is clipped at 0), so the mean of a
16×16 block of a CFA plane is an unbiased estimate of the clean block mean, and mean(out - in) over
many blocks measures the denoiser's own bias. Per-plane biases differ after white balance, so they
show up as colour casts in the shadows of the developed image.

    OMP_NUM_THREADS=1 python benchmarks/raw_bias.py ../shared/data/raw/Blackmagic.dng \
        [--weights FILE] [--crop 512x768]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from n3cli import api  # noqa: E402
from n3cli.raw import pack_bayer, read_raw  # noqa: E402

LEVELS = ((-1.0, 0.01), (0.01, 0.03), (0.03, 0.1), (0.1, 0.3), (0.3, 1.0))


def block_means(planes: np.ndarray, side: int = 16) -> np.ndarray:
    c, h, w = planes.shape
    h, w = h // side * side, w // side * side
    return planes[:, :h, :w].reshape(c, h // side, side, w // side, side).mean(axis=(2, 4))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--weights", default=None, help="noise-level-conditional weights (default: shipped)")
    ap.add_argument("--crop", default="512x768", help="centre crop HxW of the mosaic ('full' for all)")
    ap.add_argument("--nlf", default=None, help="a,b (default: from the file or estimated)")
    args = ap.parse_args()
    raw = read_raw(args.raw)
    m = raw.mosaic
    if args.crop != "full":
        ch, cw = (int(v) // 2 * 2 for v in args.crop.split("x"))
        top, left = (m.shape[0] - ch) // 4 * 2, (m.shape[1] - cw) // 4 * 2  # keep the CFA phase
        m = m[top: top + ch, left: left + cw]
    nlf = tuple(float(v) for v in args.nlf.split(",")) if args.nlf else None
    info = api.raw_nlf(raw, nlf)  # type: ignore[arg-type]
    restorer = api.load_raw_model(args.weights, "cpu")
    t0 = time.perf_counter()
    out = api.denoise_mosaic(m, raw.pattern, (info.a, info.b), model=restorer, device="cpu")
    dt = time.perf_counter() - t0
    names = [raw.pattern[i] + ("2" if raw.pattern[i] == "G" and raw.pattern[:i].count("G") else "")
             for i in range(4)]
    bp = block_means(pack_bayer(torch.from_numpy(m), raw.pattern).numpy())
    bq = block_means(pack_bayer(torch.from_numpy(out), raw.pattern).numpy())
    print(f"{args.raw}: mosaic {m.shape}, model {restorer.name}, NLF ({info.source}) a={info.a:.3g} b={info.b:.3g}, "
          f"sigma(0.05)={info.sigma(0.05):.2e}, {dt:.1f} s")
    print("mean(out - in) per CFA plane, in units of 1e-4 of the white level (blocks of 16x16):")
    print(f"{'block mean':>14} " + " ".join(f"{n:>14}" for n in names))
    for lo, hi in LEVELS:
        cells = []
        for c in range(4):
            sel = (bp[c] > lo) & (bp[c] <= hi)
            cells.append(f"{(bq[c][sel] - bp[c][sel]).mean() * 1e4:+8.1f} ({sel.sum():4d})" if sel.any() else "-")
        print(f"({max(lo, 0):.2f}, {hi:.2f}] " + " ".join(f"{c:>14}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
