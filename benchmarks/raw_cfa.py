"""Raw denoising: the whole Bayer mosaic through the gray model vs its four half-resolution CFA planes.

Two kinds of synthetic raw, both with Poisson-Gaussian noise (clipped to [0, 1]) at fixed NLFs and scored by
PSNR on the linear mosaic (data range 1):

* ``gray``: a gray image made raw-like with Eq. 13 (f_e = 2.2, f_c = 1) used as its own mosaic (the
  ``n3 bench --task raw`` protocol): no colour filter structure at all.
* ``cfa``: an RGB image linearised (x^2.2) with camera-like channel gains (R 0.5, G 1, B 0.65: the inverse of
  typical daylight white-balance multipliers) and sampled as an RGGB mosaic: a real colour filter pattern.

    OMP_NUM_THREADS=1 python benchmarks/raw_cfa.py --weights nlf.safetensors --gray ../shared/data/Set12 \
        --color ../shared/data/Kodak24 --limit 3 --crop 256
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
from n3cli.imaging import noise  # noqa: E402
from n3cli.imaging.io import read_image  # noqa: E402
from n3cli.imaging.metrics import psnr  # noqa: E402
from n3cli.raw.io import bayer_offsets  # noqa: E402

NLFS = ((1e-3, 1e-5), (4e-3, 4e-5), (1e-2, 1e-4))
GAINS = (0.5, 1.0, 0.65)


def center_crop(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max((h - side) // 2, 0), max((w - side) // 2, 0)
    out = img[top:top + side, left:left + side]
    return out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2]


def gray_mosaic(img: np.ndarray) -> np.ndarray:
    """Eq. 13 with f_e = 2.2, f_c = 1 on the (luminance of the) image, used as its own mosaic."""
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return noise.raw_like(t, 2.2, 1.0)[0].numpy()


def cfa_mosaic(img: np.ndarray, pattern: str = "RGGB") -> np.ndarray:
    """Linearised RGB with camera-like channel gains, sampled with a Bayer pattern."""
    rgb = np.clip(img[:, :, :3], 0, 1) ** 2.2 * np.asarray(GAINS, dtype=np.float32)
    out = np.empty(rgb.shape[:2], dtype=np.float32)
    colour = {"R": 0, "G": 1, "B": 2}
    for (dy, dx), c in zip(bayer_offsets(pattern), "RGGB", strict=True):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, colour[c]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="a noise-level-conditional model")
    p.add_argument("--gray", type=Path, help="folder of images for the gray-as-mosaic kind")
    p.add_argument("--color", type=Path, help="folder of RGB images for the CFA kind")
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole image)")
    args = p.parse_args(argv)
    restorer = api.load_model(args.weights, "denoise", "cpu")
    kinds = [(k, folder) for k, folder in (("gray", args.gray), ("cfa", args.color)) if folder is not None]
    for kind, folder in kinds:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".tif", ".jpg"))[: args.limit]
        make = gray_mosaic if kind == "gray" else cfa_mosaic
        for a, b in NLFS:
            rows = {"noisy": [], "planes": [], "mosaic": []}
            t = {"planes": 0.0, "mosaic": 0.0}
            for f in files:
                img = read_image(f).pixels
                clean = make(center_crop(img, args.crop) if args.crop else img)
                gen = noise.generator(noise.seed_for("raw-cfa", f.name, a, b))
                noisy = noise.add_poisson_gaussian(torch.from_numpy(clean), a, b, gen).numpy()
                rows["noisy"].append(psnr(noisy, clean))
                for cfa in ("planes", "mosaic"):
                    t0 = time.perf_counter()
                    out = api.denoise_mosaic(noisy, "RGGB", (a, b), model=restorer, cfa=cfa)
                    t[cfa] += time.perf_counter() - t0
                    rows[cfa].append(psnr(out, clean))
            diffs = " ".join(f"{x - y:+.2f}" for x, y in zip(rows["planes"], rows["mosaic"], strict=True))
            print(f"{kind:5s} a={a:g} b={b:g} n={len(files)}  noisy {np.mean(rows['noisy']):6.2f}  "
                  f"planes {np.mean(rows['planes']):6.2f} ({t['planes']:.1f}s)  "
                  f"mosaic {np.mean(rows['mosaic']):6.2f} ({t['mosaic']:.1f}s)  "
                  f"per image planes-mosaic {diffs}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
