"""Realistic camera noise on clean sRGB images: the noise a camera JPEG carries, for training real-photo models.

The recipe of Brooks et al. 2019 ("Unprocessing images for learned raw denoising", CVPR) with the JPEG step of
CBDNet (Guo et al. 2019): clean sRGB → *unprocess* (inverse tone curve, inverse gamma, sRGB → camera colour,
inverse white balance, RGGB mosaic) → Poisson-Gaussian noise σ²(x) = a·x + b at the NLF of a real sensor →
*process* (white balance, demosaicking, camera → sRGB colour, gamma, tone curve) → optional in-camera noise
reduction (the noise's luma and, harder, chroma blurred), sharpening and JPEG.

Only the noise goes through the camera: the noisy image is ``clean + process(raw + n) - process(raw)``, so the
clean target keeps its detail (demosaicking the clean mosaic would blur it and teach a model to keep the blur),
while the noise comes out spatially and chromatically correlated and signal-dependent, as in a camera JPEG (and,
through the concave tone curve, with a slightly negative mean: about -0.07 σ at σ 20 levels, -0.02 σ at σ 5).
Demosaicking uses ``colour-demosaicing`` (bilinear, Malvar 2004, Menon 2007 at random), JPEG Pillow's encoder.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import N3Error

#: XYZ → camera matrices of four real cameras, from dcraw's ``adobe_coeff`` table as Brooks et al. 2019 list them
#: (rows: camera R, G, B); a random convex mix of them is each simulated camera's colour.
XYZ2CAMS = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
)
#: Linear sRGB (D65) → XYZ (IEC 61966-2-1).
RGB2XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))

#: Demosaicking methods of the camera pipeline (``colour-demosaicing`` function suffixes).
DEMOSAIC = ("bilinear", "Malvar2004", "Menon2007")
#: Mirrored margin (pixels, even) around a mosaic while it is demosaicked.
DEMOSAIC_MARGIN = 4
#: Shot-noise range of Brooks et al.: log a ~ U(log 1e-4, log 1.2e-2); log b = 2.18 log a + 1.20 + N(0, 0.26²).
SHOT_RANGE = (1e-4, 1.2e-2)


@dataclass(frozen=True)
class Camera:
    """One simulated camera and exposure: colour matrix, white balance, NLF and the JPEG that stores it."""

    rgb2cam: tuple[tuple[float, ...], ...]  #: linear sRGB → camera RGB, rows summing to 1
    rgb_gain: float  #: overall brightness gain (the exposure the tone curve assumed)
    red_gain: float  #: white-balance gains of the red and blue sites (green is 1)
    blue_gain: float
    a: float  #: Poisson-Gaussian NLF of the raw signal, σ²(x) = a·x + b, x in [0, 1]
    b: float
    demosaic: str = "Malvar2004"
    sharpen: float = 0.0  #: unsharp-mask amount applied to the noise (in-camera sharpening), 0: none
    nr_luma: float = 0.0  #: in-camera noise reduction: Gaussian blur σ (pixels) of the noise's luma, 0: none
    nr_chroma: float = 0.0  #: ... and of its chroma (cameras smooth chroma noise hardest)
    nr_keep_luma: float = 0.0  #: share of the luma noise's fine part (noise − its blur) the reduction keeps
    nr_keep_chroma: float = 0.0  #: ... and of the chroma noise's
    jpeg_quality: int | None = None  #: None: no JPEG


def sample_camera(gen: torch.Generator, jpeg_fraction: float = 0.7, sharpen_fraction: float = 0.5,
                  nr_fraction: float = 0.0, nr_mixed_fraction: float = 0.0) -> Camera:
    """A random camera over Brooks et al.'s ranges: a random convex mix of :data:`XYZ2CAMS`, red gain U(1.9, 2.4),
    blue gain U(1.5, 1.9), brightness gain 1/N(0.8, 0.1), NLF over :data:`SHOT_RANGE`; JPEG quality U(60, 100)
    with probability ``jpeg_fraction``, sharpening U(0, 1) with probability ``sharpen_fraction``; in-camera noise
    reduction with probability ``nr_fraction``: the noise's luma blurred by σ U(0.5, 2) px, its chroma by
    U(1, 3) px; otherwise, with probability ``nr_mixed_fraction``, a reduction that leaves noise of several scales
    (:data:`NR_MIXED`): the noise's coarse part kept whole and a share of its fine part."""
    u = torch.rand(15, generator=gen, dtype=torch.float64).tolist()
    mixed = None
    if nr_mixed_fraction > 0:  # drawn only then, so that runs without it keep their random stream
        mixed = torch.rand(5, generator=gen, dtype=torch.float64).tolist()
    z = torch.randn(2, generator=gen, dtype=torch.float64).tolist()
    mix = np.array(u[:4]) / sum(u[:4])
    xyz2cam = np.tensordot(mix, np.array(XYZ2CAMS), axes=1)
    rgb2cam = xyz2cam @ np.array(RGB2XYZ)
    rgb2cam = rgb2cam / rgb2cam.sum(axis=1, keepdims=True)
    log_a = math.log(SHOT_RANGE[0]) + u[4] * (math.log(SHOT_RANGE[1]) - math.log(SHOT_RANGE[0]))
    log_b = 2.18 * log_a + 1.20 + 0.26 * z[0]
    if u[14] < nr_fraction:
        reduction = {"nr_luma": 0.5 + 1.5 * u[12], "nr_chroma": 1.0 + 2.0 * u[13]}
    elif mixed is not None and mixed[4] < nr_mixed_fraction:
        reduction = {k: lo + (hi - lo) * v for (k, (lo, hi)), v in zip(NR_MIXED.items(), mixed[:4], strict=True)}
    else:
        reduction = {}
    return Camera(
        rgb2cam=tuple(tuple(float(v) for v in row) for row in rgb2cam),
        rgb_gain=1.0 / max(0.8 + 0.1 * z[1], 0.5),
        red_gain=1.9 + 0.5 * u[5],
        blue_gain=1.5 + 0.4 * u[6],
        a=math.exp(log_a),
        b=math.exp(log_b),
        demosaic=DEMOSAIC[min(int(u[7] * len(DEMOSAIC)), len(DEMOSAIC) - 1)],
        sharpen=u[8] if u[9] < sharpen_fraction else 0.0,
        jpeg_quality=60 + min(int(u[10] * 41), 40) if u[11] < jpeg_fraction else None,
        **reduction,
    )


#: Ranges (uniform) of the mixed-scale in-camera noise reduction: blur σ (px) and the share of the fine part kept,
#: luma and chroma. Chosen so that the simulated noise (after sharpening and JPEG) comes near real camera JPEG noise
#: (PolyU-val, flat pixels: normalised luma autocorrelation 0.62 / 0.30 / 0.14 at lags 1 / 2 / 4 px, chroma 0.88 /
#: 0.79 / 0.62; `benchmarks/noise_correlation.py`: 0.44 / 0.30 / 0.13 and 0.88 / 0.71 / 0.44 with these ranges,
#: 0.54 / 0.32 / 0.09 and 0.91 / 0.72 / 0.36 with the one-blur reduction; docs/real-photos.md).
NR_MIXED = {"nr_luma": (1.0, 2.5), "nr_keep_luma": (0.0, 0.25), "nr_chroma": (3.0, 6.0), "nr_keep_chroma": (0.0, 0.1)}


# --- the camera pipeline, both ways (rgb: (3, H, W) in [0, 1]) ----------------------------------------------

def _matrix(m: tuple[tuple[float, ...], ...], like: Tensor) -> Tensor:
    return torch.tensor(m, dtype=like.dtype, device=like.device)


def _wb_gains(cam: Camera, like: Tensor) -> Tensor:
    return torch.tensor([cam.red_gain, 1.0, cam.blue_gain], dtype=like.dtype, device=like.device) * cam.rgb_gain


def unprocess(rgb: Tensor, cam: Camera) -> Tensor:
    """sRGB (3, H, W) → linear raw RGGB mosaic (H, W): inverse smoothstep tone curve, inverse gamma 2.2,
    sRGB → camera colour, inverse white balance (keeping highlights from saturating), mosaic."""
    x = rgb.clamp(0, 1)
    x = 0.5 - torch.sin(torch.asin(1.0 - 2.0 * x) / 3.0)  # inverse of the smoothstep 3x² - 2x³
    x = x.clamp_min(1e-8).pow(2.2)
    x = torch.einsum("ij,jhw->ihw", _matrix(cam.rgb2cam, x), x)
    gains = 1.0 / _wb_gains(cam, x)
    gray = x.mean(0, keepdim=True)
    mask = ((gray - 0.9).clamp_min(0) / 0.1).square()  # Brooks et al.: no gain < 1 near white
    x = x * torch.maximum(mask + (1 - mask) * gains.view(3, 1, 1), gains.view(3, 1, 1))
    return mosaic(x)


def mosaic(x: Tensor) -> Tensor:
    """RGGB Bayer mosaic (H, W) of a linear RGB image (3, H, W) with even sides."""
    out = x[1].clone()
    out[0::2, 0::2] = x[0, 0::2, 0::2]
    out[1::2, 1::2] = x[2, 1::2, 1::2]
    return out


def demosaic(raw: Tensor, method: str = "Malvar2004") -> Tensor:
    """RGGB mosaic (H, W) → RGB (3, H, W) with ``colour-demosaicing`` (a training extra: ``pip install n3[train]``)."""
    if method not in DEMOSAIC:
        raise ValueError(f"unknown demosaicking {method!r}; known: {', '.join(DEMOSAIC)}")
    fn = getattr(demosaicing_library(), f"demosaicing_CFA_Bayer_{method}")
    # Mirrored by an even margin, which keeps the CFA phase: the library's own borders are not exact.
    m = DEMOSAIC_MARGIN
    padded = np.pad(raw.detach().cpu().double().numpy(), m, mode="reflect")
    out = fn(padded, "RGGB")[m:-m, m:-m]
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).to(raw.dtype).to(raw.device)


def demosaicing_library() -> Any:
    """The ``colour_demosaicing`` module; an N3Error saying how to install it when it is missing."""
    try:
        with warnings.catch_warnings():  # colour-science warns at import that matplotlib is missing
            warnings.simplefilter("ignore")
            import colour_demosaicing
    except ImportError:
        raise N3Error("simulating camera noise needs colour-demosaicing: pip install 'n3cli[train]'") from None
    return colour_demosaicing


def process(raw: Tensor, cam: Camera) -> Tensor:
    """Linear raw RGGB mosaic (H, W) → sRGB (3, H, W): white balance, demosaicking, camera → sRGB colour,
    gamma 1/2.2, smoothstep tone curve."""
    g = _wb_gains(cam, raw)
    balanced = raw.clone()
    balanced[0::2, 0::2] *= g[0]
    balanced[0::2, 1::2] *= g[1]
    balanced[1::2, 0::2] *= g[1]
    balanced[1::2, 1::2] *= g[2]
    x = demosaic(balanced.clamp(0, 1), cam.demosaic).clamp(0, 1)
    cam2rgb = torch.linalg.inv(_matrix(cam.rgb2cam, x).double()).to(x.dtype)
    x = torch.einsum("ij,jhw->ihw", cam2rgb, x).clamp(0, 1)
    x = x.clamp_min(1e-8).pow(1 / 2.2)
    return 3 * x.square() - 2 * x.pow(3)


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (C, H, W) per channel, σ in pixels (reflected borders)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = torch.nn.functional.pad(x[None], (r, r, r, r), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


#: RGB → (luma, two chroma) used by the noise reduction; orthonormal, so its inverse is its transpose.
_OPP = ((1 / math.sqrt(3),) * 3, (1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)),
        (1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)))


def noise_reduction(noise: Tensor, luma: float, chroma: float, keep_luma: float = 0.0,
                    keep_chroma: float = 0.0) -> Tensor:
    """In-camera noise reduction on a noise image (3, H, W): its luma blurred by σ ``luma``, its two chroma
    channels by σ ``chroma`` (pixels), with the share ``keep_luma`` / ``keep_chroma`` of the fine part (noise − its
    blur) added back. Applied to the noise only, it is an ideal NR that keeps every detail."""
    m = _matrix(_OPP, noise)
    o = torch.einsum("ij,jhw->ihw", m, noise)

    def reduce(x: Tensor, sigma: float, keep: float) -> Tensor:
        if sigma <= 0:
            return x
        coarse = _blur(x, sigma)
        return coarse + keep * (x - coarse) if keep else coarse

    parts = [reduce(o[:1], luma, keep_luma), reduce(o[1:], chroma, keep_chroma)]
    return torch.einsum("ji,jhw->ihw", m, torch.cat(parts))


def _unsharp(x: Tensor, amount: float) -> Tensor:
    """x + amount·(x - blur(x)) with a 3×3 binomial blur (replicated borders), per channel."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :] / 16).expand(x.shape[0], 1, 3, 3)
    blur = torch.nn.functional.conv2d(torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="replicate"), k,
                                      groups=x.shape[0])[0]
    return x + amount * (x - blur)


def jpeg(rgb: Tensor, quality: int) -> Tensor:
    """The image (3, H, W) in [0, 1] stored as an 8-bit JPEG of ``quality`` (4:2:0, Pillow) and read back."""
    arr = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out.transpose(2, 0, 1).copy()).to(rgb.dtype).to(rgb.device)


def camera_noisy(clean: Tensor, cam: Camera, gen: torch.Generator) -> Tensor:
    """The clean sRGB image (3, H, W) with the noise ``cam`` gives it (see the module docstring)."""
    h, w = clean.shape[-2:]
    he, we = h + h % 2, w + w % 2
    src = torch.nn.functional.pad(clean[None], (0, we - w, 0, he - h), mode="replicate")[0] if (he, we) != (h, w) \
        else clean
    raw = unprocess(src, cam)
    shot = torch.poisson(raw.clamp_min(0) / cam.a, generator=gen) * cam.a - raw.clamp_min(0)
    read = torch.randn(raw.shape, generator=gen, dtype=raw.dtype) * math.sqrt(cam.b)
    diff = process(raw + shot + read, cam) - process(raw, cam)
    if cam.nr_luma or cam.nr_chroma:
        diff = noise_reduction(diff, cam.nr_luma, cam.nr_chroma, cam.nr_keep_luma, cam.nr_keep_chroma)
    if cam.sharpen:
        diff = _unsharp(diff, cam.sharpen)
    noisy = (clean + diff[:, :h, :w]).clamp(0, 1)
    return jpeg(noisy, cam.jpeg_quality) if cam.jpeg_quality is not None else noisy


__all__ = ["DEMOSAIC", "NR_MIXED", "RGB2XYZ", "SHOT_RANGE", "XYZ2CAMS", "Camera", "camera_noisy", "demosaic",
           "demosaicing_library", "jpeg", "mosaic", "noise_reduction", "process", "sample_camera", "unprocess"]
