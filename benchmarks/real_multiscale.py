"""Would a multiscale scheme remove coarse camera noise? A diagnostic for issue #49 (not a method of the tool).

Camera JPEG noise is coarse (its luma autocorrelation is 0.57 at lag 1); a denoiser sees it better at half
resolution, where it is nearly white. Two-scale schemes after Lebrun, Colom and Morel ("Multiscale image blind
denoising", IEEE TIP 2015), with D the blind colour model, ↓ a 2×2 mean and ↑ bicubic upsampling:

* ``A``: D(x) + ↑(D(↓x) − ↓D(x))                (the fine result's coarse part taken from the coarse result)
* ``B``: D(x − ↑↓x + ↑D(↓x))                     (the coarse part of x replaced by the denoised coarse image first)
* ``C``: B, then A's correction
* ``Bc``: B on the opponent chroma only (luma keeps its coarse part; coarser levels, if any, run plain B)

followed by the number of scales (``B2``: two; ``1``: D alone). ``--set real``: the central 256² of the PolyU-val
pairs, blind, as the training validation; ``--set gauss``: the first 8 CBSD68 images, clean and with i.i.d.
Gaussian noise, blind; ``--set estimate``: what the wavelet noise estimator sees of the opponent luma at full and at
half size, on the PolyU-val photos and on 10 clean CBSD68 images (could coarse noise be detected?). Outputs rounded to
8 bit. Usage:
python benchmarks/real_multiscale.py --set real --variants 1,A2,B2,C2,B3,Bc2 [--weights n3net-color]
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from n3cli import api
from n3cli.bench.datasets import real_pairs
from n3cli.bench.run import quantize8
from n3cli.imaging.color import opponent2rgb, rgb2opponent
from n3cli.imaging.io import read_image
from n3cli.imaging.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _t(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()


def _n(x: Tensor) -> np.ndarray:
    return x[0].numpy().transpose(1, 2, 0)


def _down(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    return F.avg_pool2d(F.pad(x, (0, w % 2, 0, h % 2), mode="replicate"), 2)


def _up(x: Tensor, like: Tensor) -> Tensor:
    h, w = like.shape[-2:]
    return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)[..., :h, :w]


def _chroma_only(d: Tensor) -> Tensor:
    """The opponent chroma part of an RGB difference image (its luma set to 0)."""
    zero = rgb2opponent(np.zeros_like(_n(d)))
    opp = rgb2opponent(_n(d)) - zero
    opp[..., 0] = 0
    return _t(opponent2rgb(opp + zero))


def schemes(denoise: Callable[[Tensor], Tensor]) -> dict[str, Callable[[Tensor, int], Tensor]]:
    def a(x: Tensor, levels: int) -> Tensor:
        d0 = denoise(x)
        return d0 if levels == 1 else d0 + _up(a(_down(x), levels - 1) - _down(d0), x)

    def b(x: Tensor, levels: int) -> Tensor:
        return denoise(x) if levels == 1 else denoise(x + _up(b(_down(x), levels - 1) - _down(x), x))

    def c(x: Tensor, levels: int) -> Tensor:
        if levels == 1:
            return denoise(x)
        d1 = c(_down(x), levels - 1)
        d0 = denoise(x + _up(d1 - _down(x), x))
        return d0 + _up(d1 - _down(d0), x)

    def bc(x: Tensor, levels: int) -> Tensor:
        if levels == 1:
            return denoise(x)
        return denoise(x + _chroma_only(_up(b(_down(x), levels - 1) - _down(x), x)))

    return {"A": a, "B": b, "C": c, "Bc": bc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="n3net-color")
    ap.add_argument("--set", choices=["real", "gauss", "estimate"], default="real")
    ap.add_argument("--variants", default="1,A2,B2")
    ap.add_argument("--sigmas", default="0,3,15,25,50")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    if args.set == "estimate":
        for name, files in (("PolyU-val noisy", [n for n, _ in real_pairs(DATA / "PolyU-val")]),
                            ("CBSD68 clean", sorted((DATA / "CBSD68").iterdir())[:10])):
            full, half = [], []
            for f in files:
                img = read_image(f).pixels
                full.append(api.estimate_channel_sigmas(img, "opponent")[0])
                half.append(api.estimate_channel_sigmas(_n(_down(_t(img))), "opponent")[0])
            print(f"{name}: luma σ seen at full size {min(full):.1f}-{max(full):.1f}, at half size "
                  f"{min(half):.1f}-{max(half):.1f} levels")
        return
    restorer = api.load_model(args.weights, "denoise-color", "cpu")
    if not restorer.info.blind_capable:
        raise SystemExit("needs a blind-capable colour model")

    def denoise(x: Tensor) -> Tensor:
        return _t(api.denoise(_n(x), None, model=restorer, color="auto"))

    table = schemes(denoise)
    variants = args.variants.split(",")

    def run(noisy: np.ndarray, clean: np.ndarray) -> dict[str, float]:
        out = {}
        for v in variants:
            name, levels = (v, 1) if v == "1" else (v[:-1], int(v[-1]))
            if name not in table:
                raise SystemExit(f"unknown variant {v!r}: 1 or A, B, C, Bc followed by the number of scales")
            y = _n(table[name](_t(noisy), levels))
            out[v] = psnr(quantize8(y), clean)
        return out

    if args.set == "real":
        rows = []
        for noisy_path, clean_path in real_pairs(DATA / "PolyU-val"):
            noisy, clean = read_image(noisy_path).pixels, read_image(clean_path).pixels
            h, w = noisy.shape[:2]
            box = (slice(h // 2 - 128, h // 2 + 128), slice(w // 2 - 128, w // 2 + 128))
            noisy, clean = noisy[box], clean[box]
            rows.append({"noisy": psnr(noisy, clean)} | run(noisy, clean))
        base = np.mean([r["noisy"] for r in rows])
        for key in ["noisy", *variants]:
            mean = float(np.mean([r[key] for r in rows]))
            print(f"{key:>6s}  {mean:.3f} dB ({mean - base:+.2f})")
        return
    files = sorted((DATA / "CBSD68").iterdir())[:8]
    print("sigma  " + "  ".join(f"{v:>7s}" for v in variants))
    for sigma in (float(s) for s in args.sigmas.split(",")):
        rows = []
        for i, f in enumerate(files):
            clean = read_image(f).pixels
            gen = torch.Generator().manual_seed(i)
            noisy = (clean + torch.randn(clean.shape, generator=gen).numpy() * sigma / 255).astype(np.float32)
            rows.append(run(noisy, clean))
        print(f"{sigma:5g}  " + "  ".join(f"{np.mean([r[v] for r in rows]):7.3f}" for v in variants))


if __name__ == "__main__":
    main()
