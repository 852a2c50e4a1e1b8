"""How a training batch is made for each task: clean crops in, (network input, target) out."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..imaging import noise
from ..imaging.noise import SIGMA_MAX
from ..imaging.resize import SR_SCALES, imresize

__all__ = ["SIGMA_MAX", "SR_SCALES"]  # re-exported: defined beside the noise model and the resizer


@dataclass(frozen=True)
class NoiseSpec:
    """``sigma``: fixed Gaussian σ (0-255 scale); else noise-level-conditional training.

    Conditional: each sample is Gaussian (a = 0, σ ~ U(0, sigma_max)) with probability
    ``gaussian_fraction``, else Poisson-Gaussian noise on a raw-like image (Eq. 13) with an NLF
    drawn over the paper's ranges (:func:`n3cli.imaging.noise.sample_nlf`), clipped to [0, 1].

    ``camera`` ('raw'): a conditional model for camera raw data only: every sample is one CFA plane
    (every other pixel, :func:`n3cli.imaging.noise.cfa_plane`) of a raw-like crop twice the patch size,
    with exact Poisson-Gaussian noise a·Poisson(x/a) + N(0, b) clipped to [0, 1] as a sensor gives it,
    which is the data ``n3 raw-denoise`` feeds the network (the CFA planes of a mosaic).
    """

    sigma: float | None = None
    sigma_max: float = SIGMA_MAX
    gaussian_fraction: float = 0.5
    camera: bool = False

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        """'25' or 'gaussian:25' (fixed σ); 'nlf' or 'nlf:0.5' (conditional, Gaussian fraction);
        'raw' (conditional, camera raw CFA planes only)."""
        text = text.strip().lower()
        if text == "raw":
            return cls(None, gaussian_fraction=0.0, camera=True)
        if text.startswith("nlf"):
            frac = float(text.split(":", 1)[1]) if ":" in text else 0.5
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"Gaussian fraction must be in [0, 1], got {frac}")
            return cls(None, gaussian_fraction=frac)
        sigma = float(text.split(":", 1)[1] if text.startswith("gaussian") else text)
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        return cls(sigma)

    @property
    def conditional(self) -> bool:
        return self.sigma is None

    @property
    def in_planes(self) -> int:
        return 1 + (len(noise.NLF_PLANES) if self.conditional else 0)

    @property
    def crop_scale(self) -> int:
        """Clean crops are drawn this many times the patch size (2 for CFA planes)."""
        return 2 if self.camera else 1

    def describe(self) -> str:
        if self.camera:
            return ("raw: CFA planes of raw-like images (Eq. 13), exact Poisson-Gaussian noise "
                    "(paper ranges), clipped")
        if self.conditional:
            return (f"nlf: Gaussian σ~U(0,{self.sigma_max:g}) w.p. {self.gaussian_fraction:g}, "
                    "else raw-like Poisson-Gaussian (paper ranges)")
        return f"gaussian sigma {self.sigma:g}"


def denoise_batch(clean: Tensor, spec: NoiseSpec, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Noisy network input (with NLF planes when conditional) and the clean target."""
    n = clean.shape[0]
    if not spec.conditional:
        return noise.add_gaussian(clean, spec.sigma, gen), clean
    if spec.camera:
        return camera_batch(clean, gen)
    gauss = torch.rand(n, generator=gen) < spec.gaussian_fraction
    sigma = torch.rand(n, generator=gen) * spec.sigma_max
    a_raw, b_raw = noise.sample_nlf(n, gen)
    f_e = 1.25 + 8.75 * torch.rand(n, generator=gen)
    f_c = 0.25 + 0.75 * torch.rand(n, generator=gen)
    raw = noise.raw_like(clean, f_e.view(n, 1, 1, 1), f_c.view(n, 1, 1, 1))
    target = torch.where(gauss.view(n, 1, 1, 1), clean, raw)
    a = torch.where(gauss, torch.zeros(n), a_raw)
    b = torch.where(gauss, (sigma / 255.0) ** 2, b_raw)
    eps = torch.randn(clean.shape, generator=gen)
    noisy = target + eps * noise.nlf_variance(target, a.view(n, 1, 1, 1), b.view(n, 1, 1, 1)).sqrt()
    # Real sensors clip; the Gaussian benchmark protocol does not.
    noisy = torch.where(gauss.view(n, 1, 1, 1), noisy, noisy.clamp(0, 1))
    return torch.cat([noisy, noise.nlf_planes(a, b, noisy)], dim=1), target


def camera_batch(clean: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Camera raw samples (``NoiseSpec.camera``): a random CFA plane of each raw-like crop (Eq. 13 with
    f_e ~ U(1.25, 10), f_c ~ U(0.25, 1)) with exact Poisson-Gaussian noise at an NLF over the paper's ranges."""
    n = clean.shape[0]
    plane = noise.cfa_plane(clean, torch.randint(0, 4, (n,), generator=gen))
    f_e = 1.25 + 8.75 * torch.rand(n, generator=gen)
    f_c = 0.25 + 0.75 * torch.rand(n, generator=gen)
    target = noise.raw_like(plane, f_e.view(n, 1, 1, 1), f_c.view(n, 1, 1, 1))
    a, b = noise.sample_nlf(n, gen)
    noisy = noise.add_poisson_gaussian(target, a.view(n, 1, 1, 1), b.view(n, 1, 1, 1), gen, clip=True)
    return torch.cat([noisy, noise.nlf_planes(a, b, noisy)], dim=1), target


#: Noise-normalised loss: reference variance (σ 25) and floor (σ 2) of the per-sample weights, 0-1 scale.
NMSE_REF, NMSE_FLOOR = (25.0 / 255.0) ** 2, (2.0 / 255.0) ** 2


def sample_weights(x: Tensor, target: Tensor, spec: NoiseSpec) -> Tensor:
    """Per-sample loss weights of the noise-normalised MSE: ``NMSE_REF / (v + NMSE_FLOOR)`` with ``v``
    the sample's mean noise variance (a·x + b averaged over the clean target; a and b read back from a
    conditional input's NLF planes). A sample's MSE then counts relative to its own noise level, so every
    noise level weighs about the same in dB instead of the high σ dominating a plain MSE."""
    n = x.shape[0]
    if not spec.conditional:
        v = torch.full((n,), (spec.sigma / 255.0) ** 2, dtype=target.dtype, device=target.device)
    else:
        a, b = noise.nlf_from_planes(x)
        v = noise.nlf_variance(target, a.view(n, 1, 1, 1), b.view(n, 1, 1, 1)).mean(dim=(1, 2, 3))
    return NMSE_REF / (v + NMSE_FLOOR)


def sr_crop_size(patch: int, scales: tuple[int, ...] = SR_SCALES) -> int:
    """HR crop side: the patch plus a margin, rounded up to a multiple of every scale."""
    lcm = math.lcm(*scales)
    return -(-(patch + 4) // lcm) * lcm


def sr_batch(hr: Tensor, patch: int, gen: torch.Generator, scales: tuple[int, ...] = SR_SCALES
             ) -> tuple[Tensor, Tensor]:
    """VDSR-style pairs: each sample at a random scale s, LR = MATLAB-bicubic(HR, 1/s) rounded to 8 bit,
    input = bicubic(LR, s); both centre-cropped to ``patch`` (away from resampling borders)."""
    n, _, size, _ = hr.shape
    choice = torch.randint(0, len(scales), (n,), generator=gen)
    up = torch.empty_like(hr)
    for i, s in enumerate(scales):
        idx = (choice == i).nonzero().flatten()
        if idx.numel():
            lr = (imresize(hr[idx], 1.0 / s) * 255.0).round().clamp(0, 255) / 255.0
            up[idx] = imresize(lr, float(s))
    o = (size - patch) // 2
    return up[:, :, o: o + patch, o: o + patch], hr[:, :, o: o + patch, o: o + patch]


#: Reference squared error of the SR weights (30 dB, a typical bicubic input's error on a training crop).
SR_NMSE_REF = 1e-3


def sr_sample_weights(x: Tensor, target: Tensor) -> Tensor:
    """Per-sample weights of the SR loss ``nmse``: ``SR_NMSE_REF / (e + NMSE_FLOOR)`` with ``e`` the bicubic
    input's mean squared error against the target. Under a plain MSE the ×4 and ×3 samples, whose errors are
    largest, dominate the gradient and ×2 lags (measured: +0.30 dB over bicubic at ×2 against +1.17 at ×3
    after 1,066 steps); relative to the input's own error every scale counts about alike in dB."""
    e = (x[:, :1].float() - target.float()).square().mean(dim=(1, 2, 3))
    return SR_NMSE_REF / (e + NMSE_FLOOR)
