"""Evaluate the single-image noise level function estimator on synthetic raw-like images.

Clean images are made raw-like with the paper's Eq. 13 (f_e ~ U(1.25, 10), f_c ~ U(0.25, 1) by default),
treated as an RGGB mosaic, and given Poisson-Gaussian or heteroscedastic Gaussian noise (alternating) with
(a, b) drawn over the paper's NLF ranges (log10 a ~ U(-4, -1), log10 b = log10 a - 2.3 + U(-1.3, 1.3)).
Prints the median relative errors of a, b and σ(0.5) = sqrt(0.5a + b), with and without clipping to [0, 1].

    OMP_NUM_THREADS=1 python benchmarks/raw_nlf_eval.py --images ../shared/data/BSD68 --n 340 --seed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from n3cli.raw.nlf_eval import evaluate, load_images, skimage_samples, summarise  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "BSD68",
                   help="folder of clean gray/RGB images, or 'skimage' for scikit-image's sample photos")
    p.add_argument("--n", type=int, default=136, help="number of trials (cycling over the images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", choices=("both", "yes", "no"), default="both",
                   help="clip the noisy raw to [0, 1] like a sensor (default: report both)")
    p.add_argument("--fe-range", type=float, nargs=2, default=(1.25, 10.0), metavar=("LO", "HI"))
    p.add_argument("--fc-range", type=float, nargs=2, default=(0.25, 1.0), metavar=("LO", "HI"))
    p.add_argument("--verbose", action="store_true", help="print every trial")
    args = p.parse_args(argv)

    if str(args.images) == "skimage":
        images = skimage_samples()
    elif args.images.is_dir():
        images = load_images(args.images)
    else:
        print(f"{args.images}: no such folder", file=sys.stderr)
        return 2
    if not images:
        print(f"{args.images}: no images", file=sys.stderr)
        return 2
    clips = {"both": (True, False), "yes": (True,), "no": (False,)}[args.clip]
    print(f"{len(images)} images from {args.images}, {args.n} trials, seed {args.seed}, "
          f"f_e ~ U{tuple(args.fe_range)}, f_c ~ U{tuple(args.fc_range)}")
    for clip in clips:
        t0 = time.perf_counter()
        trials = evaluate(images, args.n, seed=args.seed, f_e_range=tuple(args.fe_range),
                          f_c_range=tuple(args.fc_range), clip=clip)
        if args.verbose:
            for t in trials:
                print(f"  {t.name:12s} {t.kind:16s} f_e={t.f_e:5.2f} f_c={t.f_c:4.2f} a={t.a:.3e} b={t.b:.3e}"
                      f" -> a={t.a_hat:.3e} b={t.b_hat:.3e}  err σ(0.5)={t.err_sigma:.3f}")
        s = summarise(trials)
        print(f"clip={'yes' if clip else 'no '}  median rel. error: a {s['median_err_a']:.3f}  "
              f"b {s['median_err_b']:.3f}  σ(0.5) {s['median_err_sigma05']:.3f}  "
              f"(σ(0.5) within 15%: {s['frac_sigma05_within_15pct']:.0%}; "
              f"{s['mean_seconds'] * 1000:.0f} ms/estimate; {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
