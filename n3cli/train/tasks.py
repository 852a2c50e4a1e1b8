"""The tasks a run trains (denoise, raw, sr): how batches are made from clean crops, weighed and validated."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..errors import N3Error
from ..imaging import metrics, noise
from ..imaging.noise import SIGMA_MAX
from ..imaging.resize import SR_SCALES, imresize
from ..nn.nets import BLIND_CAPABLE, noise_planes
from ..weights import NOISE_PLANE_NAMES, RGB_PLANES
from .config import NMSE_FLOOR_SIGMA
from .data import ImageBank

__all__ = ["SIGMA_MAX", "SR_SCALES"]  # re-exported: defined beside the noise model and the resizer


@dataclass(frozen=True)
class NoiseSpec:
    """``sigma``: fixed Gaussian σ (0-255 scale); else noise-level-conditional training.

    Conditional: each sample is Gaussian (a = 0, σ ~ U(sigma_min, sigma_max)) with probability
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
    sigma_min: float = 0.0

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        """'25' or 'gaussian:25' (fixed σ); 'nlf' or 'nlf:0.5' (conditional, Gaussian fraction), optionally with
        the Gaussian σ's range: 'nlf:1,sigma=25' (always σ 25, the level given: a per-σ fine-tune of a
        conditional model) or 'nlf:0.6,sigma=15-35'; 'raw' (conditional, camera raw CFA planes only)."""
        text = text.strip().lower()
        if text == "raw":
            return cls(None, gaussian_fraction=0.0, camera=True)
        if text.startswith("nlf"):
            head, _, rng = text.partition(",")
            frac = float(head.split(":", 1)[1]) if ":" in head else 0.5
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"Gaussian fraction must be in [0, 1], got {frac}")
            lo, hi = 0.0, SIGMA_MAX
            if rng:
                key, _, value = rng.partition("=")
                if key.strip() != "sigma" or not value:
                    raise ValueError(f"expected sigma=S or sigma=LO-HI after the comma, got {rng!r}")
                parts = value.split("-")
                if len(parts) > 2:
                    raise ValueError(f"expected sigma=S or sigma=LO-HI, got {rng!r}")
                lo, hi = float(parts[0]), float(parts[-1])
                if not 0.0 <= lo <= hi <= SIGMA_MAX:
                    raise ValueError(f"sigma range must lie in [0, {SIGMA_MAX:g}] with LO <= HI, got {value}")
            return cls(None, sigma_max=hi, gaussian_fraction=frac, sigma_min=lo)
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
            return (f"nlf: Gaussian σ~U({self.sigma_min:g},{self.sigma_max:g}) w.p. {self.gaussian_fraction:g}, "
                    "else raw-like Poisson-Gaussian (paper ranges)")
        return f"gaussian sigma {self.sigma:g}"


class Batch(NamedTuple):
    """A training batch: network input ``x`` (N, 1, H, W), its noise levels ``noise`` (N, 2) as (a, b) for a
    conditional model (None otherwise; the model builds its √a/√b planes from them) and the ``target``."""

    x: Tensor
    noise: Tensor | None
    target: Tensor

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        """The arguments of the model's forward."""
        return (self.x,) if self.noise is None else (self.x, self.noise)

    def to(self, device: torch.device) -> Batch:
        return Batch(*(None if t is None else t.to(device) for t in self))


def denoise_batch(clean: Tensor, spec: NoiseSpec, gen: torch.Generator) -> Batch:
    """Noisy network input (with the noise levels when conditional) and the clean target."""
    n = clean.shape[0]
    if not spec.conditional:
        return Batch(noise.add_gaussian(clean, spec.sigma, gen), None, clean)
    if spec.camera:
        return camera_batch(clean, gen)
    gauss = torch.rand(n, generator=gen) < spec.gaussian_fraction
    sigma = spec.sigma_min + torch.rand(n, generator=gen) * (spec.sigma_max - spec.sigma_min)
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
    return Batch(noisy, torch.stack([a, b], dim=1), target)


def camera_batch(clean: Tensor, gen: torch.Generator) -> Batch:
    """Camera raw samples (``NoiseSpec.camera``): a random CFA plane of each raw-like crop (Eq. 13 with
    f_e ~ U(1.25, 10), f_c ~ U(0.25, 1)) with exact Poisson-Gaussian noise at an NLF over the paper's ranges."""
    n = clean.shape[0]
    plane = noise.cfa_plane(clean, torch.randint(0, 4, (n,), generator=gen))
    f_e = 1.25 + 8.75 * torch.rand(n, generator=gen)
    f_c = 0.25 + 0.75 * torch.rand(n, generator=gen)
    target = noise.raw_like(plane, f_e.view(n, 1, 1, 1), f_c.view(n, 1, 1, 1))
    a, b = noise.sample_nlf(n, gen)
    noisy = noise.add_poisson_gaussian(target, a.view(n, 1, 1, 1), b.view(n, 1, 1, 1), gen, clip=True)
    return Batch(noisy, torch.stack([a, b], dim=1), target)


#: Noise-normalised loss: reference variance (σ 25) and floor (σ 2) of the per-sample weights, 0-1 scale.
NMSE_REF, NMSE_FLOOR = (25.0 / 255.0) ** 2, (NMSE_FLOOR_SIGMA / 255.0) ** 2


def sample_weights(levels: Tensor | None, target: Tensor, spec: NoiseSpec, floor: float = NMSE_FLOOR) -> Tensor:
    """Per-sample loss weights of the noise-normalised MSE: ``NMSE_REF / (v + floor)`` with ``v``
    the sample's mean noise variance (a·x + b averaged over the clean target; ``levels`` the (N, 2) noise
    levels of a conditional batch). A sample's MSE then counts relative to its own noise level, so every
    noise level weighs about the same in dB instead of the high σ dominating a plain MSE."""
    n = target.shape[0]
    if levels is None:
        v = torch.full((n,), (spec.sigma / 255.0) ** 2, dtype=target.dtype, device=target.device)
    else:
        ab = noise_planes(levels, target)[:, :, 0, 0].float().square()  # (a, b) as the input planes hold them
        v = noise.nlf_variance(target, ab[:, 0].view(n, 1, 1, 1), ab[:, 1].view(n, 1, 1, 1)).mean(dim=(1, 2, 3))
    return NMSE_REF / (v + floor)


def sr_crop_size(patch: int, scales: tuple[int, ...] = SR_SCALES) -> int:
    """HR crop side: the patch plus a margin, rounded up to a multiple of every scale."""
    lcm = math.lcm(*scales)
    return -(-(patch + 4) // lcm) * lcm


def sr_batch(hr: Tensor, patch: int, gen: torch.Generator, scales: tuple[int, ...] = SR_SCALES
             ) -> Batch:
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
    return Batch(up[:, :, o: o + patch, o: o + patch], None, hr[:, :, o: o + patch, o: o + patch])


#: Reference squared error of the SR weights (30 dB, a typical bicubic input's error on a training crop).
SR_NMSE_REF = 1e-3


def sr_sample_weights(x: Tensor, target: Tensor, floor: float = NMSE_FLOOR) -> Tensor:
    """Per-sample weights of the SR loss ``nmse``: ``SR_NMSE_REF / (e + floor)`` with ``e`` the bicubic
    input's mean squared error against the target. Under a plain MSE the ×4 and ×3 samples, whose errors are
    largest, dominate the gradient and ×2 lags; relative to the input's own error every scale counts about
    alike in dB (docs/training.md)."""
    e = (x[:, :1].float() - target.float()).square().mean(dim=(1, 2, 3))
    return SR_NMSE_REF / (e + floor)


# --- validation ---------------------------------------------------------------------------------

@dataclass
class Validation:
    """Mean PSNR (:func:`n3cli.imaging.metrics.psnr`) of a model over fixed (inputs, clean) pairs.

    ``border``: pixels cropped at every side of each pair before measuring (SR: the scale); ``quantize``:
    round the output to 8-bit levels first (SR's protocol). ``fields``: what the log records say about it.
    """

    items: list[tuple[tuple[Any, ...], Tensor, int]]
    fields: dict[str, Any]
    quantize: bool = False

    @torch.inference_mode()
    def __call__(self, model: nn.Module, device: torch.device) -> float:
        was_training = model.training
        model.eval()
        psnrs = []
        try:
            for inputs, clean, border in self.items:
                args = [t.to(device) if isinstance(t, Tensor) else t for t in inputs]
                out = model(*args).float().cpu()
                if self.quantize:
                    out = (out * 255.0).round().clamp(0, 255) / 255.0
                if border:
                    out, clean = out[..., border:-border, border:-border], clean[..., border:-border, border:-border]
                # a batch (the four CFA planes of one raw image) is measured as one image of its planes
                psnrs.append(min(metrics.psnr(out.flatten(0, 1), clean.flatten(0, 1)), 120.0))
        finally:
            model.train(was_training)
        return sum(psnrs) / len(psnrs)

    @property
    def sigma(self) -> float | None:
        return self.fields.get("val_sigma")

    @property
    def nlf(self) -> tuple[float, float] | None:
        nlf = self.fields.get("val_nlf")
        return tuple(nlf) if nlf else None  # type: ignore[return-value]


def _gray_images(folder: str, limit: int, luma: str = "L") -> list[Tensor]:
    bank = ImageBank([folder], luma=luma, what="validation")
    return [im.float()[None, None] / 255.0 for im in bank.images[:limit]]


# --- tasks --------------------------------------------------------------------------------------

class Task:
    """What a kind of run trains on: how its batches are made, weighed and validated."""

    name = "denoise"  #: the registry task of its exported weights
    luma = "L"  #: how colour training images become gray, or "rgb" (:class:`n3cli.train.data.ImageBank`)
    channels = 1  #: image planes in and out of the model
    noise_inputs = 0  #: noise-level inputs of the model (2: √a/√b planes built by the model; 3: and "known")
    sigma: float | None = None  #: fixed Gaussian σ of a per-σ denoiser

    @property
    def in_planes(self) -> int:
        """Input channels of the model's first convolution: image plus noise-level planes."""
        return self.channels + self.noise_inputs

    @property
    def conditional(self) -> bool:
        return self.noise_inputs > 0

    @property
    def plane_names(self) -> list[str]:
        """The model's input planes by name, as its weights file records them."""
        image = ["image"] if self.channels == 1 else list(RGB_PLANES)
        return image + list(NOISE_PLANE_NAMES[: self.noise_inputs])

    def crop_size(self, patch: int) -> int:
        """Side of the clean crops drawn per sample."""
        return patch

    def batch(self, clean: Tensor, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def loss_weights(self, batch: Batch, floor: float = NMSE_FLOOR, blind_floor: float | None = None) -> Tensor:
        """Per-sample weights of the noise-normalised loss (``loss = "nmse"``); ``floor``: the variance (0-1
        scale) added to each sample's noise power, which bounds the weight of nearly clean samples;
        ``blind_floor``: the same for the samples whose level the model is not given (None: ``floor``)."""
        raise NotImplementedError

    def validation(self, folder: str, limit: int, val_sigma: float) -> Validation:
        raise NotImplementedError

    def describe(self) -> str | None:
        """The training noise, in words (stored in checkpoints and exported weights); None: no noise."""
        raise NotImplementedError


class DenoiseTask(Task):
    """Gaussian denoising at a fixed σ, or noise-level-conditional (``noise = "nlf"``)."""

    def __init__(self, spec: NoiseSpec) -> None:
        self.spec = spec
        self.noise_inputs = len(noise.NLF_PLANES) if spec.conditional else 0
        self.sigma = spec.sigma

    def crop_size(self, patch: int) -> int:
        return patch * self.spec.crop_scale

    def batch(self, clean: Tensor, gen: torch.Generator) -> Batch:
        return denoise_batch(clean, self.spec, gen)

    def loss_weights(self, batch: Batch, floor: float = NMSE_FLOOR, blind_floor: float | None = None) -> Tensor:
        return sample_weights(batch.noise, batch.target, self.spec, floor)

    def validation(self, folder: str, limit: int, val_sigma: float) -> Validation:
        """Gaussian noise at σ (the run's own, else ``val_sigma``), drawn from a seed fixed per image."""
        sigma = self.spec.sigma if self.spec.sigma is not None else val_sigma
        level = noise.sigma_to_nlf(sigma) if self.conditional else None
        items = []
        for i, clean in enumerate(_gray_images(folder, limit)):
            noisy = noise.add_gaussian(clean, sigma, noise.generator(noise.seed_for("val", i, sigma)))
            items.append(((noisy,) if level is None else (noisy, level), clean, 0))
        return Validation(items, {"val_sigma": sigma})

    def describe(self) -> str:
        return self.spec.describe()


class RawTask(DenoiseTask):
    """Camera raw denoising (``noise = "raw"``): CFA planes with Poisson-Gaussian noise, conditional."""

    name = "raw"

    def validation(self, folder: str, limit: int, val_sigma: float) -> Validation:
        """The benchmark's raw protocol: each image made raw-like (Eq. 13, f_e 2.2), used as its own mosaic,
        exact Poisson-Gaussian noise at the middle benchmark NLF, denoised as its four CFA planes."""
        a, b = noise.RAW_NLFS[1]
        items = []
        for i, im in enumerate(_gray_images(folder, limit)):
            clean = noise.cfa_plane(noise.raw_like(im.expand(4, -1, -1, -1), noise.RAW_F_E, noise.RAW_F_C),
                                    torch.arange(4))
            noisy = noise.add_poisson_gaussian(clean, a, b, noise.generator(noise.seed_for("val-raw", i, a, b)))
            items.append(((noisy, (a, b)), clean, 0))
        return Validation(items, {"val_sigma": None, "val_nlf": [a, b]})


class SRTask(Task):
    """Single-image super-resolution at scales 2, 3 and 4 on the luma Y (VDSR's protocol)."""

    name = "sr"
    luma = "y"

    def __init__(self, patch: int) -> None:
        self.patch = patch

    def crop_size(self, patch: int) -> int:
        return sr_crop_size(patch)

    def batch(self, clean: Tensor, gen: torch.Generator) -> Batch:
        return sr_batch(clean, self.patch, gen)

    def loss_weights(self, batch: Batch, floor: float = NMSE_FLOOR, blind_floor: float | None = None) -> Tensor:
        return sr_sample_weights(batch.x, batch.target, floor)

    def validation(self, folder: str, limit: int, val_sigma: float) -> Validation:
        """PSNR on Y, output rounded to 8 bit, ``scale`` pixels cropped, over the images and scales 2, 3, 4."""
        items = []
        for hr in _gray_images(folder, limit, luma="y"):
            for s in SR_SCALES:
                crop = hr[:, :, : hr.shape[-2] // s * s, : hr.shape[-1] // s * s]
                lr = (imresize(crop, 1.0 / s) * 255.0).round().clamp(0, 255) / 255.0
                items.append(((imresize(lr, float(s)),), crop, s))
        return Validation(items, {"val_sigma": None}, quantize=True)

    def describe(self) -> str | None:
        return None


def same_kind(a: Task, b: Task) -> bool:
    """Whether two training noises are of one kind: the same model planes, channels and validation (the noise a
    resumed run may switch to, or the BN calibration batches of an export may be drawn with). Super-resolution
    has no noise to switch: never."""
    if isinstance(a, SRTask) or isinstance(b, SRTask):
        return False
    return (type(a), a.plane_names, a.channels, a.sigma) == (type(b), b.plane_names, b.channels, b.sigma)


def task_for(task: str, noise_text: str, patch: int) -> Task:
    """The task object of a run's ``task``, ``noise`` and ``patch`` settings."""
    if task == "sr":
        return SRTask(patch)
    if noise_text.strip().lower().startswith("real"):
        try:
            return RealColorTask(RealSpec.parse(noise_text))
        except ValueError as exc:
            raise N3Error(f"--noise {noise_text!r}: {exc}") from None
    try:
        spec = NoiseSpec.parse(noise_text)
    except ValueError as exc:
        raise N3Error(f"--noise {noise_text!r}: {exc}") from None
    return RawTask(spec) if spec.camera else DenoiseTask(spec)


# --- colour photos: Gaussian and real camera noise, with or without the level --------------------------------

#: The keys of ``real:...`` and the :class:`RealSpec` fields they set.
_REAL_KEYS = {"camera": "camera_fraction", "known": "known_fraction", "nr": "nr_fraction", "nrmix": "nr_mixed_fraction",
              "blindmax": "blind_sigma_max"}


@dataclass(frozen=True)
class RealSpec:
    """``noise = "real"``: a colour model for photos that also works blind. Each sample gets, with probability
    ``camera_fraction``, the noise of a simulated camera JPEG (:mod:`n3cli.imaging.camera`; no level given),
    else i.i.d. Gaussian noise σ ~ U(0, ``sigma_max``) on every channel, its level given with probability
    ``known_fraction`` and withheld otherwise. Text: ``real`` or ``real:camera=0.5,known=0.5`` (also ``nr=F``,
    ``nrmix=F``: the shares of simulated cameras with in-camera noise reduction, one blur or mixed-scale;
    ``blindmax=S``: the Gaussian samples whose level is withheld draw σ ~ U(0, S) instead, S in [0, 75])."""

    camera_fraction: float = 0.5
    known_fraction: float = 0.5
    sigma_max: float = SIGMA_MAX
    nr_fraction: float = 0.0  #: simulated cameras with in-camera noise reduction (validated worse so far)
    nr_mixed_fraction: float = 0.0  #: of the others, those with the mixed-scale reduction (camera.NR_MIXED)
    #: largest σ of the Gaussian samples whose level is withheld (the CLI serves a colour image blind only when its
    #: fine-scale noise is weak, see ``api.FINE_NOISE_LIMIT``; stronger Gaussian noise goes to the gray model)
    blind_sigma_max: float = SIGMA_MAX

    def __post_init__(self) -> None:
        if not 0.0 <= self.blind_sigma_max <= self.sigma_max:
            raise ValueError(f"blindmax must be in [0, {self.sigma_max:g}], got {self.blind_sigma_max:g}")

    @classmethod
    def parse(cls, text: str) -> RealSpec:
        text = text.strip().lower()
        if text == "real":
            return cls()
        head, _, rest = text.partition(":")
        if head != "real" or not rest:
            raise ValueError("expected 'real' or 'real:camera=F,known=F,nr=F,nrmix=F,blindmax=S'")
        values: dict[str, float] = {}
        for item in rest.split(","):
            key, _, value = item.partition("=")
            if key.strip() not in _REAL_KEYS:
                raise ValueError(f"unknown key {key.strip()!r} ({', '.join(_REAL_KEYS)})")
            v = float(value)
            if key.strip() != "blindmax" and not 0.0 <= v <= 1.0:  # a σ: checked with the spec (__post_init__)
                raise ValueError(f"{key.strip()} must be in [0, 1], got {v}")
            values[_REAL_KEYS[key.strip()]] = v
        return cls(**values)

    def describe(self) -> str:
        nr = f", in-camera noise reduction w.p. {self.nr_fraction:g}" if self.nr_fraction else ""
        if self.nr_mixed_fraction:
            nr += f", mixed-scale noise reduction w.p. {self.nr_mixed_fraction:g}"
        blind = (f" (σ~U(0,{self.blind_sigma_max:g}) when withheld)" if self.blind_sigma_max < self.sigma_max
                 else "")
        return (f"real: camera-pipeline noise (Brooks et al. 2019, blind) w.p. {self.camera_fraction:g}{nr}, else "
                f"Gaussian σ~U(0,{self.sigma_max:g}) on RGB, its level given w.p. {self.known_fraction:g}{blind}")


def real_batch(clean: Tensor, spec: RealSpec, gen: torch.Generator) -> Batch:
    """Colour crops (N, 3, H, W) with camera or Gaussian noise; ``noise`` rows (a, b, known)."""
    from ..imaging.camera import camera_noisy, sample_camera

    n = clean.shape[0]
    camera = torch.rand(n, generator=gen) < spec.camera_fraction
    known = (torch.rand(n, generator=gen) < spec.known_fraction) & ~camera
    sigma = torch.rand(n, generator=gen) * spec.sigma_max
    if spec.blind_sigma_max < spec.sigma_max:  # the same draws, scaled: runs without the cap are unchanged
        sigma = torch.where(known | camera, sigma, sigma * (spec.blind_sigma_max / spec.sigma_max))
    noisy = noise.add_gaussian(clean, sigma.view(n, 1, 1, 1), gen)
    for i in camera.nonzero().flatten().tolist():
        cam = sample_camera(gen, nr_fraction=spec.nr_fraction, nr_mixed_fraction=spec.nr_mixed_fraction)
        noisy[i] = camera_noisy(clean[i], cam, gen)
    b = torch.where(known, (sigma / 255.0) ** 2, torch.zeros(n))
    levels = torch.stack([torch.zeros(n), b, known.float()], dim=1)
    return Batch(noisy, levels, clean)


class RealColorTask(Task):
    """Colour denoising of photos (``noise = "real"``), one pass over RGB, blind or with a given level."""

    luma = "rgb"
    channels = 3
    noise_inputs = BLIND_CAPABLE

    def __init__(self, spec: RealSpec) -> None:
        if spec.camera_fraction > 0:
            from ..imaging.camera import demosaicing_library

            demosaicing_library()  # missing: refused before any training
        self.spec = spec

    def batch(self, clean: Tensor, gen: torch.Generator) -> Batch:
        return real_batch(clean, self.spec, gen)

    def loss_weights(self, batch: Batch, floor: float = NMSE_FLOOR, blind_floor: float | None = None) -> Tensor:
        """``NMSE_REF / (v + floor)`` with ``v`` the sample's measured noise power (camera noise has no
        single σ); the samples trained blind (level withheld: ``noise[:, 2] == 0``) add ``blind_floor`` instead
        where it is given."""
        v = (batch.x.float() - batch.target.float()).square().mean(dim=(1, 2, 3))
        if blind_floor is None:
            return NMSE_REF / (v + floor)
        assert batch.noise is not None
        floors = torch.where(batch.noise[:, 2].to(v.device) > 0, floor, blind_floor)
        return NMSE_REF / (v + floors)

    def validation(self, folder: str, limit: int, val_sigma: float) -> Validation:
        """Real noisy/clean pairs (``*_real.*`` / ``*_mean.*``, e.g. PolyU-val) denoised blind, each pair's central
        256×256 crop; a folder without pairs: its colour images with Gaussian noise at ``val_sigma``, level given."""
        pairs = real_pairs(folder)[:limit]
        items: list[tuple[tuple[Any, ...], Tensor, int]] = []
        if pairs:
            for noisy_path, clean_path in pairs:
                noisy, clean = (_center(_rgb(p), VAL_CROP) for p in (noisy_path, clean_path))
                items.append(((noisy, None), clean, 0))
            return Validation(items, {"val_sigma": None, "val_real": len(items)}, quantize=True)
        level = (0.0, (val_sigma / 255.0) ** 2, 1.0)
        for i, clean in enumerate(ImageBank([folder], luma="rgb", what="validation").images[:limit]):
            clean = clean.float()[None] / 255.0
            noisy = noise.add_gaussian(clean, val_sigma, noise.generator(noise.seed_for("val", i, val_sigma)))
            items.append(((noisy, level), clean, 0))
        return Validation(items, {"val_sigma": val_sigma})

    def describe(self) -> str:
        return self.spec.describe()


#: Side of the central crop of each real validation pair.
VAL_CROP = 256


def real_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(noisy, clean) files of a folder of real pairs named ``*_real.EXT`` / ``*_mean.EXT`` (PolyU's naming)."""
    out = []
    for f in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        stem = f.stem
        if stem.endswith("_real"):
            clean = f.with_name(stem[: -len("_real")] + "_mean" + f.suffix)
            if clean.is_file():
                out.append((f, clean))
    return out


def _rgb(path: Path) -> Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]


def _center(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    t, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., t: t + size, left: left + size]
