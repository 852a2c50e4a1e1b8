"""Mean colour shift and PSNR of the shipped denoiser with and without the mean-preserving step
(:func:`n3cli.api.keep_local_mean`), at the true σ and at overestimates.

    python benchmarks/mean_shift.py [--data ../shared/data] [--threads 2]

Rows: examples/astronaut_noisy15.png (true σ 15, an 8-bit clipped noisy file) at σ 15 / 25 / 50; the first
four CBSD68 images with Gaussian noise of σ 15 / 25 / 50 (seeded per image and σ, as n3 bench draws it),
denoised at the true σ and at 1.6× the true σ; the first six Set12 images likewise (gray). Prints Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from n3cli import api
from n3cli.devices import cpu_name
from n3cli.imaging import noise
from n3cli.imaging.io import read_image
from n3cli.imaging.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]




def _noisy(clean: np.ndarray, sigma: float, name: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(clean))
    return noise.add_gaussian(t, sigma, noise.generator(noise.seed_for(name, sigma))).numpy()


def _row(label: str, noisy: np.ndarray, clean: np.ndarray, sigma: float, model: api.Restorer) -> str:
    cells = [label, f"{sigma:g}"]
    plain = api.denoise(noisy, sigma, model=model, keep_mean=False)
    hwc = (lambda a: a) if plain.ndim == 3 else (lambda a: a[:, :, None])
    # the step is linear and per pixel colour-space independent, so applying it in RGB equals api.denoise's
    kept = api.keep_local_mean(hwc(noisy), hwc(plain)).reshape(plain.shape)
    for out in (plain, kept):
        shift = (out - clean).reshape(-1, clean.shape[-1] if clean.ndim == 3 else 1).mean(0) * 255
        cells += ["/".join(f"{v:+.2f}" for v in shift), f"{psnr(out, clean):.3f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = api.load_model(None, "denoise", "cpu")
    print(f"CPU: {cpu_name()}, {args.threads} threads; model {model.name}\n")
    print("| image | σ given | shift without (levels, per channel) | PSNR without | shift with | PSNR with |")
    print("| --- | --- | --- | --- | --- | --- |")
    noisy = read_image(ROOT / "examples" / "astronaut_noisy15.png").pixels
    clean = read_image(ROOT / "examples" / "astronaut.png").pixels
    for s in (15, 25, 50):
        print(_row("astronaut_noisy15 (true σ 15)", noisy, clean, s, model), flush=True)
    for folder, count in (("CBSD68", 4), ("Set12", 6)):
        files = sorted((args.data / folder).glob("*.png"))[:count]
        for f in files:
            clean = read_image(f).pixels
            for true in (15, 25, 50):
                noisy = _noisy(clean, true, f.name)
                for given in (true, 1.6 * true):
                    print(_row(f"{folder}/{f.name} (true σ {true})", noisy, clean, given, model), flush=True)


if __name__ == "__main__":
    main()
