"""Synthetic evaluation of :func:`n3cli.raw.nlf.estimate_nlf` with known noise level functions.

Clean images are made raw-like with the paper's Eq. 13 (``f_c · Y^f_e``), treated as an RGGB mosaic, and
given Poisson-Gaussian or heteroscedastic Gaussian noise with (a, b) drawn over the paper's NLF ranges.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from n3cli.imaging.noise import add_heteroscedastic, add_poisson_gaussian, generator, raw_like, sample_nlf
from n3cli.raw.nlf import estimate_nlf

__all__ = ["NLFTrial", "evaluate", "load_images", "skimage_samples", "summarise"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class NLFTrial:
    """One synthetic trial: the true and estimated NLF and the settings that made the noisy raw."""

    name: str
    kind: str
    f_e: float
    f_c: float
    a: float
    b: float
    a_hat: float
    b_hat: float
    seconds: float

    @property
    def err_a(self) -> float:
        return abs(self.a_hat - self.a) / self.a

    @property
    def err_b(self) -> float:
        return abs(self.b_hat - self.b) / self.b

    @property
    def err_sigma(self) -> float:
        s = math.sqrt(0.5 * self.a + self.b)
        s_hat = math.sqrt(max(0.5 * self.a_hat + self.b_hat, 0.0)) if math.isfinite(self.a_hat) else math.inf
        return abs(s_hat - s) / s


def load_images(folder: str | Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Gray or RGB images of a folder as float arrays in [0, 1] (sorted by name)."""
    from skimage import io as skio

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for p in files[:limit]:
        img = np.asarray(skio.imread(p))
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        out.append((p.stem, img.astype(np.float32) / scale))
    return out


def skimage_samples(names: Sequence[str] = ("camera", "astronaut", "coffee", "chelsea", "rocket")
                    ) -> list[tuple[str, np.ndarray]]:
    """Photographs bundled with scikit-image (redistributable), as float arrays in [0, 1]."""
    from skimage import data

    return [(n, np.asarray(getattr(data, n)(), dtype=np.float32) / 255.0) for n in names]


def _as_tensor(img: np.ndarray) -> torch.Tensor:
    """HxW or HxWxC in [0, 1] -> 1xHxW or 3xHxW."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    if t.ndim == 2:
        return t[None]
    return t[..., :3].permute(2, 0, 1).contiguous()


def evaluate(images: Sequence[tuple[str, np.ndarray]], n: int, seed: int = 0,
             f_e_range: tuple[float, float] = (1.25, 10.0), f_c_range: tuple[float, float] = (0.25, 1.0),
             kinds: Sequence[str] = ("poisson-gaussian", "heteroscedastic"), clip: bool = True
             ) -> list[NLFTrial]:
    """Run ``n`` trials cycling over ``images`` and the noise ``kinds``; every draw comes from ``seed``."""
    gen = generator(seed)
    a_all, b_all = sample_nlf(n, gen)
    u = torch.rand(2, n, generator=gen, dtype=torch.float64)
    trials = []
    for i in range(n):
        name, img = images[i % len(images)]
        kind = kinds[i % len(kinds)]
        f_e = f_e_range[0] + (f_e_range[1] - f_e_range[0]) * float(u[0, i])
        f_c = f_c_range[0] + (f_c_range[1] - f_c_range[0]) * float(u[1, i])
        a, b = float(a_all[i]), float(b_all[i])
        clean = raw_like(_as_tensor(img), f_e, f_c)
        add = add_poisson_gaussian if kind == "poisson-gaussian" else add_heteroscedastic
        noisy = add(clean, a, b, gen, clip=clip)[0].numpy()
        t0 = time.perf_counter()
        est = estimate_nlf(noisy, "RGGB")
        trials.append(NLFTrial(name, kind, f_e, f_c, a, b, est.a, est.b, time.perf_counter() - t0))
    return trials


def summarise(trials: Sequence[NLFTrial]) -> dict[str, float]:
    """Median relative errors of a, b and σ(0.5), and the fraction of σ(0.5) errors within 15%."""
    ea = np.array([t.err_a for t in trials])
    eb = np.array([t.err_b for t in trials])
    es = np.array([t.err_sigma for t in trials])
    return {"n": float(len(trials)), "median_err_a": float(np.median(ea)),
            "median_err_b": float(np.median(eb)), "median_err_sigma05": float(np.median(es)),
            "frac_sigma05_within_15pct": float(np.mean(es <= 0.15)),
            "mean_seconds": float(np.mean([t.seconds for t in trials]))}
