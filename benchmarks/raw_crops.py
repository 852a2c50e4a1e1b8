"""Side-by-side crops of a raw developed as is and after denoising (for looking, not scoring).

Only the cropped region of the mosaic (plus a margin) is denoised and pasted back, so this takes
seconds instead of a whole-raw run; both mosaics are then developed by LibRaw with identical
settings (camera white balance, AHD, auto-brightness off, optional exposure ``--bright``) and the same
region is cut from both. The output PNG holds: left the plain development, right the denoised one,
each upscaled ``--zoom`` times (nearest neighbour) so single pixels stay visible.

    OMP_NUM_THREADS=1 python benchmarks/raw_crops.py ../shared/data/raw/Blackmagic.dng -o crops.png \
        --region 1000,1800,256,256 [--bright 4] [--weights FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from n3cli import api  # noqa: E402
from n3cli.raw import develop, read_raw  # noqa: E402

MARGIN = 96


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--region", required=True, help="top,left,height,width in mosaic pixels (unrotated)")
    ap.add_argument("--bright", type=float, default=1.0, help="LibRaw brightness for both developments")
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    raw = read_raw(args.raw)
    top, left, h, w = (int(v) // 2 * 2 for v in args.region.split(","))
    t0, l0 = max(top - MARGIN, 0), max(left - MARGIN, 0)
    t1, l1 = min(top + h + MARGIN, raw.shape[0]), min(left + w + MARGIN, raw.shape[1])
    info = api.raw_nlf(raw)
    den = raw.mosaic.copy()
    part = api.denoise_mosaic(raw.mosaic[t0:t1, l0:l1], raw.pattern, (info.a, info.b), model=args.weights,
                              device="cpu")
    den[top:top + h, left:left + w] = part[top - t0: top - t0 + h, left - l0: left - l0 + w]
    settings = {"no_auto_bright": True, "bright": args.bright, "user_flip": 0}
    plain = develop(raw, None, **settings)[top:top + h, left:left + w]
    clean = develop(raw, den, **settings)[top:top + h, left:left + w]
    pair = np.concatenate([plain, np.full((h, 8, 3), 255, np.uint8), clean], axis=1)
    pair = pair.repeat(args.zoom, axis=0).repeat(args.zoom, axis=1)
    Image.fromarray(pair).save(args.output)
    diff = clean.astype(np.float64) - plain.astype(np.float64)
    print(f"{args.output}: NLF ({info.source}) a={info.a:.3g} b={info.b:.3g}; mean RGB shift (denoised - plain) "
          f"{diff.reshape(-1, 3).mean(0).round(2).tolist()} of 255; local std plain "
          f"{_local_std(plain):.2f}, denoised {_local_std(clean):.2f}")
    return 0


def _local_std(img: np.ndarray) -> float:
    """Median over 8×8 blocks of the green channel's standard deviation: noise in flat areas."""
    g = img[..., 1].astype(np.float64)
    hh, ww = g.shape[0] // 8 * 8, g.shape[1] // 8 * 8
    blocks = g[:hh, :ww].reshape(hh // 8, 8, ww // 8, 8).std(axis=(1, 3))
    return float(np.median(blocks))


if __name__ == "__main__":
    sys.exit(main())
