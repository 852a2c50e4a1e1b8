"""Where a denoiser's remaining error on real noisy/clean pairs lives (issue #49 diagnostic).

For each pair ``*_real.*`` / ``*_mean.*`` of ``--data`` (default: PolyU-val, whole photos), the noisy photo is
denoised as ``n3 denoise`` does with no flags (``--weights``, blind); with ``--luma L`` the opponent luma of that
output is also replaced by the gray model's (``--gray``) at σ L, and with ``--chroma C`` its two chroma channels by
the gray model's at σ C (the other channels kept). All outputs are rounded to 8 bit as ``n3 bench --task real``
does. Printed:

1. **Bands**: the noise n = noisy − reference and the removed residual r = noisy − output per opponent channel
   (luma, red-blue, green-magenta; 0-255) in three bands (Gaussian σ 4 and 1 px split: coarse > 8 px, mid, fine
   < 2 px): mean energies, the fraction of the noise removed (β = <r, n> / <n, n>) and the removed energy the
   noise does not explain (signal taken away, or a difference the reference has).
2. **Flat and edge pixels**: the noise std and the output's error in the 30 % flattest and the 20 % steepest
   pixels of the reference (gradient of its luma, smoothed by σ 1.5), and the luma noise's normalised
   autocorrelation at horizontal lags 1, 2, 4 px among the flat pixels (how coarse the noise is where no texture
   is).
3. **What the reference differs by at edges**: the share of the noise's variance at the steepest 20 % that a
   linear fit on the reference's Laplacian and gradients explains (a sub-pixel shift or a blur between the shot
   and the mean of shots: not noise, and nothing a denoiser can remove), and the gain over the noisy photo when
   the shot and the output are first aligned to the reference (phase correlation, 1/20 px; 8 px border cut).

Usage: python benchmarks/real_error_anatomy.py [--weights n3net-color] [--luma 5] [--chroma 4] [--threads 1]
A diagnostic: a luma σ picked with the answers known is not a method (the tool must find the level itself).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, laplace, sobel
from scipy.ndimage import shift as nd_shift

from n3cli import api
from n3cli.bench.datasets import real_pairs
from n3cli.bench.run import quantize8
from n3cli.devices import cpu_name
from n3cli.imaging.color import opponent2rgb, rgb2opponent
from n3cli.imaging.io import read_image
from n3cli.imaging.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
BANDS = ("> 8 px", "2-8 px", "< 2 px")
CHANNELS = ("luma", "red-blue", "green-magenta")


def bands(x: np.ndarray) -> list[np.ndarray]:
    """A plane (H, W) minus its mean, split into coarse, mid and fine parts (they sum to it)."""
    x = x - x.mean()
    coarse, mid = gaussian_filter(x, 4), gaussian_filter(x, 1)
    return [coarse, mid - coarse, x - mid]


def steepness(ref_luma: np.ndarray) -> np.ndarray:
    y = gaussian_filter(ref_luma, 1.5)
    return np.hypot(sobel(y, 0), sobel(y, 1))


LAGS = (1, 2, 4)


def masked_autocorrelation(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of a plane at horizontal :data:`LAGS`, over pixel pairs both in ``mask``."""
    x = x - x[mask].mean()
    v = float((x[mask] ** 2).mean())
    return np.array([(x[:, :-d] * x[:, d:])[mask[:, :-d] & mask[:, d:]].mean() / v for d in LAGS])


def explained_at_edges(noise: np.ndarray, ref_luma: np.ndarray, edge: np.ndarray) -> float:
    """Share of the noise's variance at ``edge`` a linear fit on the reference's Laplacian and gradients explains."""
    x = np.stack([laplace(ref_luma)[edge], sobel(ref_luma, 1)[edge], sobel(ref_luma, 0)[edge],
                  np.ones(int(edge.sum()))], axis=1)
    y = noise[edge]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(1 - ((y - x @ coef) ** 2).mean() / ((y - y.mean()) ** 2).mean())


def aligned_psnrs(noisy: np.ndarray, out: np.ndarray, ref: np.ndarray, noisy_luma: np.ndarray,
                  ref_luma: np.ndarray) -> tuple[float, float, float, float]:
    """PSNR of the noisy photo and the output, as given and shifted onto the reference (8 px border cut); the
    shift is the one between the lumas."""
    from skimage.registration import phase_cross_correlation

    move, _, _ = phase_cross_correlation(ref_luma, noisy_luma, upsample_factor=20)

    def shifted(x: np.ndarray) -> np.ndarray:
        return np.stack([nd_shift(x[..., k], move, order=3, mode="nearest") for k in range(3)], -1)[8:-8, 8:-8]

    cut = ref[8:-8, 8:-8]
    return (psnr(noisy[8:-8, 8:-8], cut), psnr(out[8:-8, 8:-8], cut), psnr(shifted(noisy), cut),
            psnr(shifted(out), cut))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="n3net-color")
    ap.add_argument("--gray", default="n3net-nlf", help="gray model for --luma")
    ap.add_argument("--luma", type=float, default=None, help="also: the opponent luma from the gray model at σ L")
    ap.add_argument("--chroma", type=float, default=None, help="also: the chroma from the gray model at σ C")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "PolyU-val")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    pairs = real_pairs(args.data)
    if not pairs:
        raise SystemExit(f"no *_real.* pairs in {args.data}")
    restorer = api.load_model(args.weights, "denoise-color", "cpu")
    swaps = {k: v for k, v in (("luma", args.luma), ("chroma", args.chroma)) if v is not None}
    gray = api.load_model(args.gray, "denoise", "cpu") if swaps else None
    print(f"CPU {cpu_name()}, {args.threads} threads; {restorer.describe()}; {len(pairs)} pairs, whole photos")

    energy = np.zeros((3, 3, 3))  # channel, band, (<n,n>, <r,r>, <r,n>)
    flat_edge = np.zeros((2, 2))  # flat / edge: noise std², output error² (luma)
    explained, psnrs, flat_corr = [], [], []
    mixed: dict[str, list[float]] = {"blind": [], **{k: [] for k in swaps}}
    for noisy_path, ref_path in pairs:
        noisy, ref = read_image(noisy_path).pixels[..., :3], read_image(ref_path).pixels[..., :3]
        out = quantize8(api.denoise(noisy, None, model=restorer))
        p_noisy, p_out, p_ref = (rgb2opponent(v) for v in (noisy, out, ref))  # opponent planes in [0, 1]
        o_noisy, o_out, o_ref = p_noisy * 255, p_out * 255, p_ref * 255
        n, r = o_noisy - o_ref, o_noisy - o_out
        for ch in range(3):
            for b, (nb, rb) in enumerate(zip(bands(n[..., ch]), bands(r[..., ch]), strict=True)):
                energy[ch, b] += [(nb * nb).mean(), (rb * rb).mean(), (rb * nb).mean()]
        g = steepness(o_ref[..., 0])
        flat, edge = g < np.quantile(g, 0.3), g > np.quantile(g, 0.8)
        err = o_out[..., 0] - o_ref[..., 0]
        for i, m in enumerate((flat, edge)):
            flat_edge[i] += [n[..., 0][m].var(), (err[m] ** 2).mean()]
        flat_corr.append(masked_autocorrelation(n[..., 0], flat))
        explained.append(explained_at_edges(n[..., 0], o_ref[..., 0], edge))
        psnrs.append(aligned_psnrs(noisy, out, ref, p_noisy[..., 0], p_ref[..., 0]))
        mixed["blind"].append(psnr(out, ref))
        for part, level in swaps.items():
            mix = p_out.copy()
            for ch in (0,) if part == "luma" else (1, 2):
                mix[..., ch] = api.denoise(p_noisy[..., ch], level, model=gray)
            mixed[part].append(psnr(quantize8(opponent2rgb(mix)), ref))
    energy /= len(pairs)
    flat_edge /= len(pairs)

    print("\n1. Noise n and removed residual r by band (energies in levels², 0-255; β: share of n removed)")
    print("| channel | band | <n,n> | <r,r> | β | removed, not noise | error <(n-r)²> |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for ch in range(3):
        for b in range(3):
            nn, rr, rn = energy[ch, b]
            print(f"| {CHANNELS[ch]} | {BANDS[b]} | {nn:.3f} | {rr:.3f} | {rn / nn:.2f} | {rr - rn * rn / nn:.3f} "
                  f"| {nn + rr - 2 * rn:.3f} |")
    print("\n2. Luma, flattest 30 % / steepest 20 % of the reference: noise std, output error (RMS), levels")
    for i, name in enumerate(("flat", "edge")):
        print(f"   {name}: noise {np.sqrt(flat_edge[i, 0]):.2f}  output error {np.sqrt(flat_edge[i, 1]):.2f}")
    print("   luma noise autocorrelation among flat pixels, lags " + " / ".join(map(str, LAGS)) + " px: "
          + " / ".join(f"{v:.2f}" for v in np.mean(flat_corr, axis=0)))
    p = np.mean(psnrs, axis=0)
    print(f"\n3. Luma noise variance at edges explained by the reference's derivatives: {np.mean(explained):.3f} "
          f"(per photo {min(explained):.3f}-{max(explained):.3f})")
    print(f"   gain as given: {p[1] - p[0]:+.2f} dB (noisy {p[0]:.2f}); aligned to the reference: "
          f"{p[3] - p[2]:+.2f} dB (noisy {p[2]:.2f})")
    if swaps:
        print(f"\n4. {args.weights} blind: {np.mean(mixed['blind']):.3f} dB; " + "; ".join(
            f"its {part} replaced by {args.gray} at σ {level:g}: {np.mean(mixed[part]):.3f} dB"
            for part, level in swaps.items()))


if __name__ == "__main__":
    main()
