"""How coarse is camera noise? Real pairs against the training simulation (issue #49).

For real noisy/clean pairs (``--real``, default PolyU-val: ``*_real.*`` / ``*_mean.*``) and for the camera noise
``n3 train --noise real`` simulates on clean images (``--clean``, default the first 12 of BSD200, 256² crops; the
cameras drawn as training draws them, without in-camera noise reduction, with the one-blur one and with the
mixed-scale one), prints the noise's standard
deviation per opponent channel (luma, red-blue, green-magenta; 0-255) and its normalised autocorrelation at
horizontal lags 1, 2, 4 and the diagonal lag (1, 1), luma and first chroma channel.
Usage: python benchmarks/noise_correlation.py [--real DIR] [--clean DIR] [--count 12]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from n3cli.bench.datasets import real_pairs
from n3cli.imaging.camera import camera_noisy, sample_camera
from n3cli.imaging.color import rgb2opponent
from n3cli.imaging.io import read_image

ROOT = Path(__file__).resolve().parents[1]
LAGS = ((0, 1), (0, 2), (0, 4), (1, 1))


def autocorrelation(r: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of a residual plane (H, W) at :data:`LAGS`."""
    r = r - r.mean()
    v = float((r * r).mean())
    h, w = r.shape
    return np.array([(r[dy:, dx:] * r[: h - dy, : w - dx]).mean() / v for dy, dx in LAGS])


def summary(name: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    stds, luma, chroma = [], [], []
    for noisy, clean in pairs:
        d = rgb2opponent(noisy) - rgb2opponent(clean)
        stds.append(d.reshape(-1, 3).std(0) * 255)
        luma.append(autocorrelation(d[..., 0]))
        chroma.append(autocorrelation(d[..., 1]))
    fmt = lambda v: " ".join(f"{x:6.3f}" for x in np.mean(v, axis=0))  # noqa: E731
    print(f"{name}\n  std (luma, chroma 1, chroma 2) {fmt(stds)}\n  luma autocorrelation   {fmt(luma)}\n"
          f"  chroma autocorrelation {fmt(chroma)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "PolyU-val")
    ap.add_argument("--clean", type=Path, default=ROOT.parent / "shared" / "data" / "BSD200")
    ap.add_argument("--count", type=int, default=12)
    args = ap.parse_args()
    print("lags (dy, dx): " + ", ".join(map(str, LAGS)))
    real = [(read_image(noisy).pixels, read_image(clean).pixels) for noisy, clean in real_pairs(args.real)]
    if real:
        summary(f"real pairs ({len(real)}, {args.real.name})", real)
    cleans = [read_image(f).pixels[:256, :256] for f in sorted(args.clean.iterdir())[: args.count]]
    for label, nr, mixed in (("without", 0.0, 0.0), ("with one-blur", 1.0, 0.0), ("with mixed-scale", 0.0, 1.0)):
        gen = torch.Generator().manual_seed(1)
        sim = []
        for clean in cleans:
            cam = sample_camera(gen, nr_fraction=nr, nr_mixed_fraction=mixed)
            noisy = camera_noisy(torch.from_numpy(clean.transpose(2, 0, 1).copy()), cam, gen)
            sim.append((noisy.numpy().transpose(1, 2, 0), clean))
        summary(f"simulated camera noise, {label} in-camera noise reduction ({len(sim)} crops of {args.clean.name})",
                sim)


if __name__ == "__main__":
    main()
