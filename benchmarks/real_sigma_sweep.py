"""What a given noise level would do on real camera noise: a σ sweep on real noisy/clean pairs (issue #49 diagnostic).

For each pair ``*_real.*`` / ``*_mean.*`` of ``--data`` (default: PolyU-val), the central ``--crop``² of the photo is
denoised by ``--weights`` blind (colour models) and with each given level of ``--sigmas``; outputs are rounded to
8 bit as ``n3 bench --task real`` does. A level is one σ (the same for every channel) or ``L/C`` (gray models in
opponent colour: luma σ L, both chroma σ C) or ``xG`` / ``xL/C`` (an oracle, gray models only: per photo, G
times its true noise std per opponent channel, measured against the reference; L for the luma, C for the chroma).
Also prints the true noise std per opponent channel. This is a diagnostic (an oracle σ is not a method: the tool
must find the level itself).
Usage: python benchmarks/real_sigma_sweep.py --weights n3net-color --sigmas 3 6 9 12 16 [--threads 2]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from n3cli import api
from n3cli.bench.datasets import real_pairs
from n3cli.bench.run import quantize8
from n3cli.devices import cpu_name
from n3cli.imaging.color import rgb2opponent
from n3cli.imaging.io import read_image
from n3cli.imaging.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="n3net-color")
    ap.add_argument("--sigmas", nargs="*", default=[])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "PolyU-val")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    pairs = real_pairs(args.data)
    if not pairs:
        raise SystemExit(f"no *_real.* pairs in {args.data}")
    restorer = api.load_model(args.weights, "denoise-color", "cpu")  # colour or gray denoisers
    blind = restorer.info.blind_capable
    levels: list[tuple[str, object]] = [("blind", None)] if blind else []
    for s in args.sigmas:
        if s.startswith("x"):
            if restorer.info.channels != 1:
                raise SystemExit("an oracle level (xG) needs a gray model (one σ per opponent channel)")
            g = [float(v) for v in s[1:].split("/")]
            levels.append((s, (g[0], g[-1], g[-1])))
        elif "/" in s:
            luma, chroma = (float(v) for v in s.split("/"))
            levels.append((s, (luma, chroma, chroma)))
        else:
            levels.append((s, float(s)))
    print(f"CPU {cpu_name()}, {args.threads} threads; {restorer.describe()}; {len(pairs)} pairs, central {args.crop}²")
    scores: dict[str, list[float]] = {"noisy": [], **{name: [] for name, _ in levels}}
    stds = []
    for noisy_path, clean_path in pairs:
        noisy, clean = read_image(noisy_path).pixels, read_image(clean_path).pixels
        h, w = noisy.shape[:2]
        c = args.crop // 2
        box = (slice(max(h // 2 - c, 0), h // 2 + c), slice(max(w // 2 - c, 0), w // 2 + c))
        noisy, clean = noisy[box], clean[box]
        std = (rgb2opponent(noisy) - rgb2opponent(clean)).reshape(-1, 3).std(0) * 255
        stds.append(std)
        scores["noisy"].append(psnr(noisy, clean))
        for name, level in levels:
            if name.startswith("x"):
                level = tuple(float(g) * float(v) for g, v in zip(level, std, strict=True))  # type: ignore[arg-type]
            mode = "opponent" if restorer.info.channels == 1 else "auto"
            out = api.denoise(noisy, level, model=restorer, color=mode)  # type: ignore[arg-type]
            scores[name].append(psnr(quantize8(out), clean))
    print("true noise std (opponent luma / chroma 1 / chroma 2, 0-255):",
          " / ".join(f"{v:.2f}" for v in np.mean(stds, axis=0)))
    for name, vals in scores.items():
        gain = np.mean(vals) - np.mean(scores["noisy"])
        print(f"{name:>10s}  {np.mean(vals):.3f} dB  ({gain:+.2f})")
    if len(levels) > 1:  # the best of the given levels for each photo: what a perfect choice among them would give
        table = np.array([scores[name] for name, _ in levels])
        best = table.max(axis=0)
        print(f"{'per photo':>10s}  {best.mean():.3f} dB  ({best.mean() - np.mean(scores['noisy']):+.2f}), the best of "
              "the levels for each photo")
        for i, (noisy_path, _) in enumerate(pairs):
            print(f"  {noisy_path.name}: true std {' / '.join(f'{v:.2f}' for v in stds[i])}, best "
                  f"{levels[int(table[:, i].argmax())][0]} ({best[i] - scores['noisy'][i]:+.2f} dB)")


if __name__ == "__main__":
    main()
