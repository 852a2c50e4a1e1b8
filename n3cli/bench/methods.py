"""Benchmark methods by name: our models and the methods people would use instead.

A method is a callable ``run(image, setting) -> image`` plus metadata:

* denoising: ``run(noisy, sigma)``: noisy (H, W, C) float32 with C = 1 (gray sets) or 3 (colour
  sets; RGB), *unclipped*, σ on the 0-255 scale; returns the denoised (H, W, C) image.
* super-resolution: ``run(lr, scale)``: LR (H, W, C) float in [0, 1] (8-bit levels), returns the
  (scale·H, scale·W, C) image. Model methods call :func:`n3cli.api.super_resolve` on the LR image.
* real pairs: ``run(noisy, 0.0)``: a real noisy photo (H, W, 3) float32 RGB in [0, 1] (8-bit levels); no
  noise level is given, so methods do what a user gets with no flags: ``n3net`` is the default model for
  colour images (registry task ``denoise-color``, falling back to the gray default) through
  :func:`n3cli.api.denoise` with no σ (blind for a blind-capable model, else σ estimated from the image);
  ``bm3d`` is CBM3D with σ estimated by :func:`n3cli.api.estimate_sigma` (labelled ``bm3d-est``).

A name may serve several tasks with different factories (``n3net`` and ``weights`` do):
:func:`register` ``(name, task, description)`` adds one factory per (name, task).

Names: ``n3net`` (the shipped default model of the task), ``weights:PATH`` (any weights file of the
task, also an authors' denoising ``.t7``), ``official`` (the authors' ``n3net_sigma{σ}.t7`` from the
official folder, σ = 25/50/70), ``bm3d`` (the ``bm3d`` package; CBM3D for colour), ``nlm``
(scikit-image non-local means), ``wavelet`` (scikit-image BayesShrink), ``noisy`` (identity: the input
PSNR), ``bicubic`` (SR: MATLAB bicubic).

Parameters of the classical methods (σ known to all of them; checked on two Set12 / one CBSD68
image at σ = 25):

* nlm: ``denoise_nl_means(patch_size=5, patch_distance=6, fast_mode=True, sigma=σ/255,
  h=0.8·σ/255)`` for gray (0.6 and 1.0 were 0.1-0.4 dB worse), ``h=0.6·σ/255`` for colour
  (distances averaged over 3 channels are less noisy; 0.8 was 0.7 dB worse), as scikit-image's
  gallery recommends when σ is given.
* wavelet: ``denoise_wavelet(method="BayesShrink", mode="soft", wavelet="db2", sigma=σ/255,
  rescale_sigma=True)``; colour in YCbCr (``convert2ycbcr=True``, 1.8 dB better than RGB).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import api
from ..errors import N3Error
from ..weights import WeightsError

RunFn = Callable[[np.ndarray, float], np.ndarray]
NLM_H_GRAY = 0.8
NLM_H_COLOR = 0.6
ENV_OFFICIAL = "N3_OFFICIAL_DIR"
OFFICIAL_SIGMAS = (25, 50, 70)


class MethodError(N3Error):
    """An unknown method name, or a method asked for the wrong task."""


class MethodUnavailable(N3Error):
    """A known method that cannot run here (missing package, weights or checkpoint)."""


@dataclass
class MethodOptions:
    """What the factories may need: device, tile size, the folder of the authors' checkpoints."""

    device: str = "auto"
    tile: int | None = None
    official_dir: Path | None = None
    ensemble: bool = False  # model methods average over the 8 flips/rotations (api.Restorer.self_ensemble)
    color: str = "auto"  # model methods on colour sets: api.COLOR_MODES (a forced mode is labelled -rgb/-opponent)
    precision: str = "fp32"  # model methods' arithmetic (n3cli.engine): a choice other than fp32 is labelled -bf16 …

    def load(self, weights: str | Path | None, task: str) -> api.Restorer:
        return api.load_model(weights, task, self.device, self_ensemble=self.ensemble, precision=self.precision)


@dataclass
class Method:
    """A runnable method and how to present it."""

    name: str  # as asked for, e.g. "bm3d" or "weights:/x.t7"
    label: str  # shown in tables and captions
    task: str  # denoise | sr
    run: RunFn
    paper: str | None = None  # the column of the paper's tables to compare with
    description: str = ""
    prepare: Callable[[float], None] | None = None  # before timing, once per setting (e.g. load a model)
    unavailable: Callable[[float], str | None] | None = None  # why a setting cannot be run, else None
    caution: Callable[[float], str | None] | None = None  # a warning for a setting (e.g. σ mismatch)
    ensembled: bool = False  # a model run with the self-ensemble: labelled "-x8"
    color: str = "auto"  # a model run in a forced colour mode (api.COLOR_MODES): labelled "-rgb" / "-opponent"
    shipped: bool = False  # the shipped default model of its task (its figures go to the manifest)

    def skip_reason(self, setting: float) -> str | None:
        return self.unavailable(setting) if self.unavailable else None

    def warning(self, setting: float) -> str | None:
        return self.caution(setting) if self.caution else None


Factory = Callable[[str | None, MethodOptions], Method]


@dataclass
class _Entry:
    task: str
    description: str
    factory: Factory


#: name → task → factory entry.
FACTORIES: dict[str, dict[str, _Entry]] = {}


def register(name: str, task: str, description: str) -> Callable[[Factory], Factory]:
    """Register a method factory ``(argument after "name:" or None, options) -> Method`` for ``task``."""

    def deco(factory: Factory) -> Factory:
        FACTORIES.setdefault(name, {})[task] = _Entry(task, description, factory)
        return factory

    return deco


def known_methods(task: str | None = None) -> list[str]:
    return [n for n, by_task in FACTORIES.items() if task is None or task in by_task]


#: Methods that run one of our networks (and so take MethodOptions.precision).
MODEL_METHODS = frozenset({"n3net", "weights", "official", "n3net-est"})


def build_method(spec: str, task: str, options: MethodOptions | None = None) -> Method:
    """A method from its name (``bm3d``, ``weights:PATH`` ...); raises MethodError or MethodUnavailable."""
    options = options or MethodOptions()
    base, sep, arg = spec.partition(":")
    base = base.strip().lower()
    by_task = FACTORIES.get(base)
    if by_task is None:
        raise MethodError(f"unknown method {spec!r} (known for {task}: {', '.join(known_methods(task))})")
    entry = by_task.get(task)
    if entry is None:
        raise MethodError(f"method {base!r} is for task {'/'.join(by_task)}, not {task}")
    method = entry.factory(arg.strip() if sep else None, options)
    method.name = spec
    if method.color != "auto":
        method.label += f"-{method.color}"
        method.description += f" (colour mode {method.color})"
    if method.ensembled:
        method.label += "-x8"
        method.description += " (self-ensemble x8)"
    if options.precision != "fp32" and base in MODEL_METHODS:
        method.label += f"-{options.precision}"
        method.description += f" ({options.precision})"
    return method


def build_methods(specs: list[str], task: str, options: MethodOptions | None = None
                  ) -> tuple[list[Method], list[tuple[str, str]]]:
    """Methods that can run, and (name, reason) of those that cannot; unknown names raise MethodError."""
    methods: list[Method] = []
    missing: list[tuple[str, str]] = []
    for spec in specs:
        try:
            methods.append(build_method(spec, task, options))
        except MethodUnavailable as exc:
            missing.append((spec, str(exc)))
    return methods, missing


# --- helpers -----------------------------------------------------------------------------------

def _as_hwc(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.asarray(out, dtype=np.float32).reshape(like.shape)


def _gray_or_colour(fn: Callable[..., np.ndarray], img: np.ndarray, **kwargs: Any) -> np.ndarray:
    """A scikit-image denoiser on an (H, W, 1) or (H, W, 3) image: colour with the channel axis last, gray as 2-D."""
    out = fn(img, channel_axis=-1, **kwargs) if img.shape[2] == 3 else fn(img[:, :, 0], **kwargs)
    return _as_hwc(out, img)


def _no_arg(name: str, arg: str | None) -> None:
    if arg:
        raise MethodError(f"method {name!r} takes no argument (got {name}:{arg})")


# --- model methods ---------------------------------------------------------------------------

def _model_method(restorer: api.Restorer, options: MethodOptions) -> Method:
    info = restorer.info

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the plan's notes on the noise level are reported once, by ``caution``
            return api.denoise(noisy, sigma, model=restorer, tile=options.tile, color=options.color)

    def caution(sigma: float) -> str | None:
        if not info.conditional and (info.sigma is None or float(info.sigma) != float(sigma)):
            trained = f"sigma {info.sigma:g}" if info.sigma is not None else "one unknown sigma"
            return f"{info.name} was trained for {trained}, benchmarked at sigma {sigma:g}"
        return api.untrained_noise_note(info, sigma=float(sigma))

    def unavailable(sigma: float) -> str | None:
        try:  # the colour mode's own rules (api.color_mode), for a colour image
            api.color_mode(info, 3, options.color)
        except N3Error as exc:
            return f"{info.name}: {exc}"
        return None

    return Method("", info.name, "denoise", run, paper="N3Net", description=info.description or "N3Net",
                  caution=caution, unavailable=unavailable, ensembled=restorer.self_ensemble,
                  color=options.color)


ModelMethod = Callable[[api.Restorer, MethodOptions], Method]


#: The weights registry's task whose models serve a benchmark task, where the two differ.
REGISTRY_TASK = {"real": "denoise-color"}


def registry_task(task: str) -> str:
    """The weights registry task to load for a benchmark task (``real`` → ``denoise-color``: the default model
    for colour images, which falls back to the gray ``denoise`` default; a ``denoise`` file is accepted too)."""
    return REGISTRY_TASK.get(task, task)


def shipped_method(task: str, build: ModelMethod, arg: str | None, options: MethodOptions) -> Method:
    """``n3net``: the shipped default model of ``task`` (or ``n3net:PATH``); unavailable if none is shipped."""
    if arg:
        return file_method(task, build, arg, options)
    try:
        restorer = options.load(None, registry_task(task))
    except WeightsError as exc:
        raise MethodUnavailable(f"n3net: {exc}") from None
    method = build(restorer, options)
    method.label = "n3net" if paper_column(restorer) == "N3Net" else restorer.info.name  # a default of another kind
    method.shipped = True
    return method


def paper_column(restorer: api.Restorer) -> str:
    """The column of the paper's tables a model compares with: its architecture's (N3Net, or the DnCNN / VDSR
    baselines for models built as those)."""
    arch = getattr(getattr(restorer.model, "config", None), "arch", "n3net")
    return {"vdsr": "VDSR", "dncnn": "DnCNN"}.get(arch, "N3Net")


def file_method(task: str, build: ModelMethod, arg: str | None, options: MethodOptions) -> Method:
    """``weights:PATH``: any weights file for ``task``."""
    if not arg:
        raise MethodError("method 'weights' needs a file: weights:PATH")
    return build(options.load(arg, registry_task(task)), options)


def register_model_methods(task: str, build: ModelMethod, shipped: str, file: str) -> None:
    """``n3net`` (the shipped default of ``task``) and ``weights:PATH`` (any file) for one task's model methods."""
    register("n3net", task, shipped)(functools.partial(shipped_method, task, build))
    register("weights", task, file)(functools.partial(file_method, task, build))


register_model_methods("denoise", _model_method, "our shipped default denoising model (api.load_model(None))",
                       "a weights file: weights:PATH (.safetensors, or an authors' .t7 checkpoint)")


#: Where the authors' checkpoints are looked for when no folder is given and ``$N3_OFFICIAL_DIR`` is unset,
#: relative to the current directory (the layout of a development checkout beside a ``shared/`` folder).
OFFICIAL_BESIDE = Path("..") / "shared" / "reference" / "n3net-official"


def default_official_dir() -> Path | None:
    """``$N3_OFFICIAL_DIR``, else :data:`OFFICIAL_BESIDE` if that folder exists, else None."""
    env = os.environ.get(ENV_OFFICIAL)
    if env:
        return Path(env).expanduser()
    return OFFICIAL_BESIDE if OFFICIAL_BESIDE.is_dir() else None


@register("official", "denoise", "the authors' n3net_sigma{25,50,70}.t7 for the benchmarked sigma")
def _official(arg: str | None, options: MethodOptions) -> Method:
    folder = Path(arg) if arg else options.official_dir or default_official_dir()
    if folder is None:
        raise MethodUnavailable(f"official: no folder of the authors' n3net_sigma{{25,50,70}}.t7 given "
                                f"(official_dir, ${ENV_OFFICIAL}) and no {OFFICIAL_BESIDE} here")
    have = {s: folder / f"n3net_sigma{s}.t7" for s in OFFICIAL_SIGMAS if (folder / f"n3net_sigma{s}.t7").is_file()}
    if not have:
        raise MethodUnavailable(f"official: no n3net_sigma{{25,50,70}}.t7 in {folder}")
    cache: dict[float, api.Restorer] = {}

    def unavailable(sigma: float) -> str | None:
        if options.color == "opponent":
            return "official: colour mode opponent needs a noise-level-conditional model"
        if float(sigma).is_integer() and int(sigma) in have:
            return None
        return (f"official: no checkpoint for sigma {sigma:g} in {folder} "
                f"(have {', '.join(str(s) for s in sorted(have))})")

    def prepare(sigma: float) -> None:
        if sigma not in cache:
            cache[sigma] = options.load(have[int(sigma)], "denoise")

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        prepare(sigma)
        # the authors' checkpoints are one-σ models, so "auto" is channel by channel (api.color_mode)
        return api.denoise(noisy, sigma, model=cache[sigma], tile=options.tile, color=options.color)

    return Method("official", "official", "denoise", run, paper="N3Net",
                  description=f"authors' checkpoints from {folder}", prepare=prepare, unavailable=unavailable,
                  ensembled=options.ensemble, color=options.color)


# --- classical denoisers -------------------------------------------------------------------------

def _bm3d_denoiser() -> RunFn:
    """``run(noisy, σ)``: BM3D at σ (0-255) on a gray image, CBM3D on an RGB one; MethodUnavailable without bm3d."""
    try:
        import bm3d
    except ImportError:
        raise MethodUnavailable("bm3d: the bm3d package is not installed (pip install 'n3cli[bench]')") from None

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        if noisy.shape[2] == 3:
            return _as_hwc(bm3d.bm3d_rgb(noisy, sigma_psd=sigma / 255.0), noisy)
        return _as_hwc(bm3d.bm3d(noisy[:, :, 0], sigma_psd=sigma / 255.0), noisy)

    return run


@register("bm3d", "denoise", "BM3D (bm3d package; CBM3D in opponent colour space for RGB)")
def _bm3d(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("bm3d", arg)
    run = _bm3d_denoiser()

    return Method("bm3d", "bm3d", "denoise", run, paper="BM3D", description="BM3D (Dabov et al. 2007)")


@register("nlm", "denoise", "non-local means (scikit-image, fast mode, 5x5 patches, distance 6, sigma known)")
def _nlm(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("nlm", arg)
    from skimage.restoration import denoise_nl_means

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        s = sigma / 255.0
        colour = noisy.shape[2] == 3
        return _gray_or_colour(denoise_nl_means, noisy, patch_size=5, patch_distance=6, sigma=s, fast_mode=True,
                               h=(NLM_H_COLOR if colour else NLM_H_GRAY) * s)

    return Method("nlm", "nlm", "denoise", run, description="non-local means (Buades et al. 2005)")


@register("wavelet", "denoise", "wavelet shrinkage (scikit-image BayesShrink, db2, soft, sigma known)")
def _wavelet(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("wavelet", arg)
    from skimage.restoration import denoise_wavelet

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        extra = {"convert2ycbcr": True} if noisy.shape[2] == 3 else {}
        return _gray_or_colour(denoise_wavelet, noisy.astype(np.float64), sigma=sigma / 255.0, wavelet="db2",
                               method="BayesShrink", mode="soft", rescale_sigma=True, **extra)

    return Method("wavelet", "wavelet", "denoise", run, description="BayesShrink (Chang et al. 2000)")


@register("noisy", "denoise", "identity: the noisy input itself (input PSNR)")
def _noisy(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("noisy", arg)
    return Method("noisy", "noisy", "denoise", lambda noisy, sigma: noisy.copy(), description="noisy input")


# --- super-resolution ------------------------------------------------------------------------

@register("bicubic", "sr", "MATLAB-compatible bicubic upscaling (n3cli.imaging.resize.imresize)")
def _bicubic(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("bicubic", arg)
    from ..imaging.resize import imresize_np

    def run(lr: np.ndarray, scale: float) -> np.ndarray:
        return imresize_np(np.asarray(lr, dtype=np.float64), float(scale)).astype(np.float32)

    return Method("bicubic", "bicubic", "sr", run, paper="Bicubic", description="bicubic interpolation")


def _sr_model_method(restorer: api.Restorer, options: MethodOptions) -> Method:
    info = restorer.info

    def run(lr: np.ndarray, scale: float) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untrained scales are reported once, by ``caution``
            return api.super_resolve(lr, int(scale), model=restorer, tile=options.tile)

    return Method("", info.name, "sr", run, paper=paper_column(restorer), description=info.description or "N3Net (SR)",
                  caution=lambda scale: api.untrained_scale_note(int(scale)), ensembled=restorer.self_ensemble)


register_model_methods("sr", _sr_model_method, "our shipped default SR model (api.load_model(None, 'sr'))",
                       "an SR weights file: weights:PATH (.safetensors)")


# --- raw (synthetic Bayer mosaics) -------------------------------------------------------------
# ``run(noisy, (a, b))``: noisy (H, W, 1) normalised mosaic (RGGB, Poisson-Gaussian, clipped to [0, 1]),
# (a, b) the true NLF σ²(x) = a·x + b; returns the denoised (H, W, 1) mosaic.

RAW_PATTERN = "RGGB"


def _raw_model_method(restorer: api.Restorer, options: MethodOptions, estimate: bool = False) -> Method:
    info = restorer.info
    if not info.conditional:
        raise MethodUnavailable(f"raw benchmarks need a noise-level-conditional model; {info.name!r} is not")

    def run(noisy: np.ndarray, nlf: tuple[float, float]) -> np.ndarray:
        mosaic = noisy[:, :, 0]
        if estimate:
            from ..raw.nlf import estimate_nlf

            est = estimate_nlf(mosaic, RAW_PATTERN)
            if not (np.isfinite(est.a) and np.isfinite(est.b)):
                raise N3Error(f"{info.name}: the NLF estimate failed on a {mosaic.shape} mosaic")
            nlf = (est.a, est.b)
        out = api.denoise_mosaic(mosaic, RAW_PATTERN, nlf, model=restorer, tile=options.tile)
        return out[:, :, None]

    label = f"{info.name}-est" if estimate else info.name
    what = "NLF estimated from the noisy mosaic (estimate_nlf)" if estimate else "true NLF"
    return Method("", label, "raw", run, paper=None, description=f"{info.description or 'N3Net'}; {what}",
                  ensembled=restorer.self_ensemble)


def _raw_restorer(name: str, arg: str | None, options: MethodOptions) -> api.Restorer:
    try:
        return options.load(arg or None, "raw")
    except WeightsError as exc:
        if arg:
            raise
        raise MethodUnavailable(f"{name}: {exc}") from None


@register("n3net", "raw", "our default (noise-level-conditional) model with the true NLF; n3net:PATH for a file")
def _n3net_raw(arg: str | None, options: MethodOptions) -> Method:
    return shipped_method("raw", _raw_model_method, arg, options)


@register("weights", "raw", "a noise-level-conditional weights file with the true NLF: weights:PATH")
def _weights_raw(arg: str | None, options: MethodOptions) -> Method:
    return file_method("raw", _raw_model_method, arg, options)


@register("n3net-est", "raw", "like n3net, with the NLF estimated from the noisy mosaic; n3net-est:PATH for a file")
def _n3net_est_raw(arg: str | None, options: MethodOptions) -> Method:
    method = _raw_model_method(_raw_restorer("n3net-est", arg, options), options, estimate=True)
    if not arg:
        method.label = "n3net-est"
    return method


@register("gat-bm3d", "raw", "generalised Anscombe transform + BM3D + closed-form exact unbiased inverse "
          "(true NLF; per CFA plane, gat-bm3d:mosaic for the whole mosaic)")
def _gat_bm3d(arg: str | None, options: MethodOptions) -> Method:
    cfa = (arg or "planes").lower()
    if cfa not in api.CFA_MODES:
        raise MethodError(f"gat-bm3d takes planes or mosaic (gat-bm3d:mosaic), got {arg!r}")
    try:
        import bm3d
    except ImportError:
        raise MethodUnavailable("gat-bm3d: the bm3d package is not installed (pip install 'n3cli[bench]')") from None
    from ..imaging.anscombe import gat, gat_inverse
    from ..raw.io import pack_bayer, unpack_bayer

    def denoise_plane(z: np.ndarray, a: float, b: float) -> np.ndarray:
        d = gat(z, a, b)
        lo, hi = float(d.min()), float(d.max())
        span = max(hi - lo, 1e-6)  # BM3D on [0, 1]-scaled data; the stabilised noise std becomes 1/span
        est = np.asarray(bm3d.bm3d((d - lo) / span, sigma_psd=1.0 / span), dtype=np.float64) * span + lo
        return gat_inverse(est, a, b)

    def run(noisy: np.ndarray, nlf: tuple[float, float]) -> np.ndarray:
        a, b = (float(v) for v in nlf)
        mosaic = noisy[:, :, 0].astype(np.float64)
        if cfa == "mosaic":
            out = denoise_plane(mosaic, a, b)
        else:
            planes = pack_bayer(mosaic, RAW_PATTERN)
            out = unpack_bayer(np.stack([denoise_plane(p, a, b) for p in planes]), RAW_PATTERN, mosaic.shape)
        return out.astype(np.float32)[:, :, None]

    label = "gat-bm3d" if cfa == "planes" else "gat-bm3d-mosaic"
    return Method("gat-bm3d", label, "raw", run, paper=None,
                  description="GAT + BM3D + exact unbiased inverse (Mäkitalo & Foi 2013)")


@register("noisy", "raw", "identity: the noisy mosaic itself (input PSNR)")
def _noisy_raw(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("noisy", arg)
    return Method("noisy", "noisy", "raw", lambda noisy, nlf: noisy.copy(), description="noisy input")


# --- real noisy/clean pairs ----------------------------------------------------------------------
# ``run(noisy, 0.0)``: a real noisy photo (H, W, 3) RGB in [0, 1]; no noise level is known (see the module docstring).

def _real_model_method(restorer: api.Restorer, options: MethodOptions, task: str = "real") -> Method:
    info = restorer.info
    notes: dict[str, None] = {}  # the plans' notes (e.g. an estimated σ beyond training), reported once

    def run(noisy: np.ndarray, setting: float) -> np.ndarray:
        plan = api.plan_denoise(noisy, info, None, color=options.color)
        notes.update(dict.fromkeys(plan.notes))
        return api.denoise(noisy, model=restorer, tile=options.tile, plan=plan)  # the plan holds the colour mode

    def unavailable(setting: float) -> str | None:
        try:  # the colour mode's own rules (api.color_mode), for a colour image
            api.color_mode(info, 3, options.color)
        except N3Error as exc:
            return f"{info.name}: {exc}"
        return None

    how = "blind" if info.blind_capable else "sigma estimated from the image" if info.conditional else "as trained"
    return Method("", info.name, task, run, paper=None, description=f"{info.description or 'N3Net'} ({how})",
                  unavailable=unavailable, caution=lambda setting: "; ".join(notes) or None,
                  ensembled=restorer.self_ensemble, color=options.color)


register_model_methods("real", _real_model_method,
                       "our default model for colour photos (api.load_model(None, 'denoise-color')), no sigma given",
                       "a denoising weights file, no sigma given (blind or estimated): weights:PATH")


@register("auto", "denoise", "a model given no sigma, as n3 denoise without --sigma (blind if the model can, else "
          "sigma estimated): auto:NAME or auto:PATH; default: the shipped default for colour images")
def _auto(arg: str | None, options: MethodOptions) -> Method:
    restorer = options.load(arg or None, registry_task("real"))
    method = _real_model_method(restorer, options, task="denoise")
    method.label = f"{restorer.info.name}-auto"
    return method


@register("bm3d", "real", "CBM3D (bm3d package) with sigma estimated from the noisy photo (wavelet MAD)")
def _bm3d_real(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("bm3d", arg)
    denoise = _bm3d_denoiser()

    def run(noisy: np.ndarray, setting: float) -> np.ndarray:
        return denoise(noisy, api.estimate_sigma(noisy))

    return Method("bm3d", "bm3d-est", "real", run, paper=None,
                  description="CBM3D (Dabov et al. 2007), sigma estimated (api.estimate_sigma)")


@register("noisy", "real", "identity: the real noisy photo itself (input PSNR)")
def _noisy_real(arg: str | None, options: MethodOptions) -> Method:
    _no_arg("noisy", arg)
    return Method("noisy", "noisy", "real", lambda noisy, setting: noisy.copy(), description="noisy input")
