"""Noise models, in one place for training, benchmarks and tests.

All images are float tensors in [0, 1] (the paper's evaluation protocol). Noise levels are given
either as a Gaussian standard deviation on the 0-255 scale (``sigma``) or as a noise level
function (NLF) ``σ²(x) = a·x + b`` in the normalised [0, 1] units (paper Sec. 5.3, Foi et al. 2008).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from n3cli.imaging.mosaic import pack_bayer
from n3cli.nn.nets import noise_planes

#: Largest Gaussian σ (0-255 scale) the noise-level-conditional models see in training (U(0, 75)).
SIGMA_MAX = 75.0
#: Largest σ (0-255) a denoiser accepts: twice the trained range. Beyond it the network extrapolates far
#: outside anything it saw and its output is not an estimate of the image (e.g. σ 1e9 gave a two-level picture).
SIGMA_LIMIT = 2 * SIGMA_MAX


def seed_for(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (e.g. image name and sigma).

    Used so that every method and every run sees the same noisy image.
    """
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def add_gaussian(clean: Tensor, sigma: float | Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Eq. 12: D = C + N(0, σ²), σ on the 0-255 scale, no clipping or quantisation.

    ``sigma`` may be a tensor broadcastable to ``clean`` (e.g. one value per batch item).
    """
    noise = torch.randn(clean.shape, generator=gen, dtype=clean.dtype, device=clean.device)
    return clean + noise * (torch.as_tensor(sigma, dtype=clean.dtype, device=clean.device) / 255.0)


def nlf_variance(x: Tensor, a: float | Tensor, b: float | Tensor) -> Tensor:
    """Noise variance σ²(x) = a·x + b, evaluated on the clean signal clipped to [0, 1]."""
    return (torch.as_tensor(a, dtype=x.dtype, device=x.device) * x.clamp(0, 1)
            + torch.as_tensor(b, dtype=x.dtype, device=x.device)).clamp_min(0)


def add_heteroscedastic(clean: Tensor, a: float | Tensor, b: float | Tensor,
                        gen: torch.Generator | None = None, clip: bool = True) -> Tensor:
    """Heteroscedastic Gaussian approximation of Poisson-Gaussian noise (paper Sec. 5.3).

    noisy = x + sqrt(a·x + b)·n, n ~ N(0, 1); clipped to [0, 1] like a sensor when ``clip``.
    """
    noise = torch.randn(clean.shape, generator=gen, dtype=clean.dtype, device=clean.device)
    noisy = clean + noise * nlf_variance(clean, a, b).sqrt()
    return noisy.clamp(0, 1) if clip else noisy


def add_poisson_gaussian(clean: Tensor, a: float | Tensor, b: float | Tensor,
                         gen: torch.Generator | None = None, clip: bool = True) -> Tensor:
    """Exact Poisson-Gaussian noise: a·Poisson(x/a) + N(0, b) (Foi et al. 2008)."""
    a_t = torch.as_tensor(a, dtype=clean.dtype, device=clean.device).clamp_min(1e-12)
    b_t = torch.as_tensor(b, dtype=clean.dtype, device=clean.device).clamp_min(0)
    shot = torch.poisson(clean.clamp_min(0) / a_t, generator=gen) * a_t
    read = torch.randn(clean.shape, generator=gen, dtype=clean.dtype, device=clean.device) * b_t.sqrt()
    noisy = shot + read
    return noisy.clamp(0, 1) if clip else noisy


def luminance(rgb: Tensor) -> Tensor:
    """Luminance Y(·) of an RGB tensor (..., 3, H, W) with BT.601 weights, kept as (..., 1, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * w).sum(dim=-3, keepdim=True)


def raw_like(img: Tensor, f_e: float | Tensor, f_c: float | Tensor) -> Tensor:
    """Eq. 13: Y_RAW = f_c · Y(Y_RGB)^f_e (gray inputs are used as their own luminance)."""
    y = luminance(img) if img.shape[-3] == 3 else img
    f_e_t = torch.as_tensor(f_e, dtype=img.dtype, device=img.device)
    f_c_t = torch.as_tensor(f_c, dtype=img.dtype, device=img.device)
    return f_c_t * y.clamp(0, 1).pow(f_e_t)


def sample_nlf(n: int, gen: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw n NLFs over the paper's raw ranges.

    log10 a ~ U(-4, -1), log10 b = log10 a - 2.3 + U(-1.3, 1.3).
    """
    u = torch.rand(2, n, generator=gen, dtype=torch.float64)
    log_a = -4.0 + 3.0 * u[0]
    log_b = log_a - 2.3 + (2.6 * u[1] - 1.3)
    return (10.0 ** log_a).float(), (10.0 ** log_b).float()


#: The synthetic raw protocol (benchmark and raw validation): Eq. 13 at fixed f_e = 2.2 (roughly undoing an
#: sRGB-like gamma) and f_c = 1, and its default noise level functions (a, b), σ(0.5) ≈ 0.023 / 0.046 / 0.073.
RAW_F_E, RAW_F_C = 2.2, 1.0
RAW_NLFS: tuple[tuple[float, float], ...] = ((1e-3, 1e-5), (4e-3, 4e-5), (1e-2, 1e-4))


def cfa_plane(img: Tensor, offset: Tensor) -> Tensor:
    """One CFA plane per batch item: the pixels of (N, C, H, W) at 2×2 offset ``offset[i]`` in 0..3
    (row-major: 0 = (0, 0), 1 = (0, 1), 2 = (1, 0), 3 = (1, 1)), shape (N, C, H//2, W//2). A camera's CFA
    plane is the scene sampled every other pixel, which is what the raw model denoises."""
    planes = pack_bayer(img, "RGGB")  # RGGB's R, G1, G2, B are the row-major offsets 0..3
    return planes[torch.arange(img.shape[0], device=img.device), :, offset.to(img.device)]


def sigma_to_nlf(sigma: float) -> tuple[float, float]:
    """A Gaussian σ (0-255 scale) as an NLF: a = 0, b = (σ/255)²."""
    return 0.0, (sigma / 255.0) ** 2


def nlf_sigma_at(a: float, b: float, x: float = 0.5) -> float:
    """The noise standard deviation σ(x) = sqrt(a·x + b) at intensity x (default mid-grey)."""
    return math.sqrt(max(a * x + b, 0.0))


# --- noise-level conditioning -----------------------------------------------------------------
#: Names of the conditioning planes a noise-level-conditional model receives after the image.
NLF_PLANES = ("sqrt_a", "sqrt_b")


def nlf_planes(a: float | Tensor, b: float | Tensor, like: Tensor) -> Tensor:
    """Constant planes (N, 2, H, W) holding √a and √b for a batch ``like`` of shape (N, C, H, W).

    The paper's raw model receives the NLF parameters as extra input channels; we feed their square
    roots (the noise standard deviation scale), which keeps the planes within the image's range.
    ``a`` and ``b`` are floats or tensors with one value per batch item.
    """
    n = like.shape[0]
    ab = torch.stack([torch.as_tensor(a, dtype=like.dtype, device=like.device).expand(n),
                      torch.as_tensor(b, dtype=like.dtype, device=like.device).expand(n)], dim=1)
    return noise_planes(ab, like)


def nlf_from_planes(x: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`nlf_planes`: per-sample (a, b), each (N,), from a conditional network input
    (N, 1 + 2, H, W) whose last two planes hold √a and √b."""
    ab = x[:, -len(NLF_PLANES):, 0, 0].float().square()
    return ab[:, 0], ab[:, 1]
