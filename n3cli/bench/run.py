"""The benchmark runner: every method on every image at every setting, scored, timed and aggregated.

Denoising protocol (the paper's): clean images in [0, 1] (gray sets gray, colour sets RGB);
noisy = clean + N(0, (σ/255)²) drawn with the seed ``noise.seed_for(dataset, image file name, f"{σ:g}")``,
without clipping or quantisation, so every method and every run sees the same noisy image. PSNR
compares the unclipped output with the clean image; SSIM (:func:`metrics.ssim`) is computed on the
output clipped to [0, 1].

SR protocol (:func:`metrics.sr_metrics`): HR cropped to a multiple of the scale, LR = MATLAB bicubic
``imresize(HR as uint8, 1/s)`` rounded to uint8, the method's output rounded to 8 bits, scored on the
Y channel with ``s`` border pixels cropped.

Raw protocol (synthetic Bayer data, ``--task raw``): each clean image (gray; colour sets by their BT.601
luminance) is made raw-like with Eq. 13 at fixed ``f_e = 2.2`` (roughly undoing an sRGB-like gamma) and
``f_c = 1`` (:data:`RAW_F_E`, :data:`RAW_F_C`), cropped to even size and used as its own RGGB mosaic (the
four CFA planes are the image's pixels at the four 2x2 offsets). Noise: Poisson-Gaussian ``a·Poisson(x/a) +
N(0, b)`` clipped to [0, 1] like a sensor, seeded by ``noise.seed_for(dataset, image, "raw", a, b)``, at fixed
NLFs (default :data:`RAW_NLFS`, σ(0.5) ≈ 0.023, 0.046, 0.073: the middle to upper part of the paper's
range). Methods receive the noisy mosaic and the true (a, b); PSNR and SSIM are computed on the linear mosaic
(data range 1; SSIM on the output clipped to [0, 1]). No paper figures (the paper's raw results are on
the Darmstadt Noise Dataset).

Real protocol (``--task real``, real noisy/clean photo pairs such as PolyU-val; no synthetic noise): each
pair's ``*_real`` file is the noisy input, its ``*_mean`` file (the mean of many shots) the reference, both
read as RGB float32 in [0, 1] (gray files as R = G = B, alpha dropped). There is one pseudo-setting,
:data:`REAL_SETTING` (0.0), shown and keyed as ``real``; methods receive ``run(noisy, 0.0)`` and estimate
the noise themselves. Both files are 8-bit (JPEGs for PolyU) and a user saves 8 bits, so the output is
rounded to 8-bit levels (``np.round(clip(out, 0, 1)·255)/255``) before PSNR and SSIM (data range 1, RGB).
No paper figures.

Time: ``time.perf_counter`` around the method call only, after one untimed warm-up call per method
and setting on a 64×64 crop (so one-time costs such as thread-pool start-up are not counted).
Memory: the peak resident set size of the process while the method runs, sampled from
``/proc/self/statm`` every 2 ms by a background thread, minus the RSS just before the call: the
method's own working memory, CPU side (GPU memory is not counted). Freed heap is handed back to the
OS (glibc ``malloc_trim``) before each call, else memory freed by an earlier method and reused would
not show. Where ``/proc`` is missing: the growth of ``getrusage(RUSAGE_SELF).ru_maxrss`` (a lower
bound). ``peak_mb`` of a method is the largest value over its images.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import N3Error
from ..imaging import metrics, noise
from ..imaging.color import to_gray
from ..imaging.io import read_image
from ..imaging.resize import imresize_np
from .datasets import Dataset, clean_partner
from .figures import save_comparison
from .methods import Method
from .paper import paper_psnr

Progress = Callable[[int, int, str], None]
#: A benchmark setting: σ (denoise), the integer scale (sr), an NLF (a, b) (raw) or :data:`REAL_SETTING` (real).
Setting = float | tuple[float, float]
#: The one pseudo-setting of the real task (real noisy/clean pairs have no noise parameter), shown as "real".
REAL_SETTING = 0.0
TASKS = ("denoise", "sr", "raw", "real")
#: Eq. 13 parameters of the raw protocol and its default noise level functions (a, b), shared with training.
RAW_F_E, RAW_F_C, RAW_NLFS = noise.RAW_F_E, noise.RAW_F_C, noise.RAW_NLFS
SAMPLE_INTERVAL = 0.002
WARMUP_SIDE = 64


class BenchError(N3Error):
    """A benchmark could not be run as asked."""


# --- memory ------------------------------------------------------------------------------------

def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so that a method's allocations
    show up as RSS growth instead of silently reusing what an earlier method freed."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


class PeakMemory:
    """Context manager: the peak RSS growth (bytes) while its block runs (see the module docstring)."""

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        self.interval = interval
        self.peak = 0
        self._base = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = _rss_bytes() is not None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes() or 0
            self.peak = max(self.peak, rss - self._base)

    def __enter__(self) -> PeakMemory:
        _release_free_memory()
        self._base = (_rss_bytes() or 0) if self._proc else _maxrss_bytes()
        if self._proc:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, (_rss_bytes() or 0) - self._base)
        else:
            self.peak = max(0, _maxrss_bytes() - self._base)

    @property
    def mb(self) -> float:
        return self.peak / 2**20


# --- results -----------------------------------------------------------------------------------

@dataclass
class ImageResult:
    """One method on one image at one setting."""

    image: str
    method: str
    setting: Setting
    psnr: float
    ssim: float
    seconds: float
    megapixels: float
    peak_mb: float


@dataclass
class Summary:
    """One method at one setting, over all images."""

    dataset: str
    task: str
    method: str
    setting: Setting
    psnr: float
    ssim: float
    images: int
    seconds: float
    megapixels: float
    peak_mb: float
    paper_psnr: float | None = None
    full_set: bool = True
    warning: str | None = None
    shipped: bool = False  # the shipped default model of the task
    per_image: list[ImageResult] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.inf

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else math.inf

    @property
    def delta(self) -> float | None:
        return None if self.paper_psnr is None else self.psnr - self.paper_psnr

    def record(self) -> dict[str, Any]:
        """The JSON record (non-finite numbers as null)."""
        if self.task == "raw":
            key, value = "nlf", [float(v) for v in self.setting]  # type: ignore[union-attr]
        elif self.task == "real":
            key, value = "setting", "real"
        else:
            key, value = ("sigma" if self.task == "denoise" else "scale"), _num(self.setting)  # type: ignore[arg-type]
        rec: dict[str, Any] = {
            "dataset": self.dataset, "task": self.task, "method": self.method, key: value,
            "psnr": self.psnr, "ssim": self.ssim, "images": self.images, "seconds": self.seconds,
            "images_per_second": self.images_per_second, "megapixels_per_second": self.megapixels_per_second,
            "peak_mb": self.peak_mb, "paper_psnr": self.paper_psnr, "paper_delta": self.delta,
            "full_set": self.full_set,
        }
        if self.warning:
            rec["warning"] = self.warning
        rec["per_image"] = [{"image": r.image, "psnr": _finite(r.psnr), "ssim": _finite(r.ssim),
                             "seconds": r.seconds} for r in self.per_image]
        return {k: _finite(v) for k, v in rec.items()}


def _finite(v: Any) -> Any:
    """JSON has no inf / nan: non-finite floats become null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass
class BenchResult:
    dataset: str
    task: str
    summaries: list[Summary] = field(default_factory=list)
    images: list[ImageResult] = field(default_factory=list)
    skipped: list[tuple[str, float, str]] = field(default_factory=list)  # (method, setting, reason)
    saved: list[Path] = field(default_factory=list)


@dataclass
class BenchConfig:
    task: str  # denoise | sr | raw | real
    settings: list[Setting]  # σ values (0-255 scale), integer scales, NLFs (a, b) or [REAL_SETTING]
    limit: int | None = None
    save_images: Path | None = None
    warmup: bool = True  # one untimed call per method and setting on a small crop first


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def setting_key(task: str, setting: Setting) -> str:
    """How a setting is named in the weights registry's metrics: sigma25, x3, nlf=0.001,1e-05 or real."""
    if task == "real":
        return "real"
    if isinstance(setting, tuple):  # raw: an NLF (a, b)
        return "nlf={:g},{:g}".format(*setting)
    return f"{'sigma' if task == 'denoise' else 'x'}{setting:g}"


def setting_label(task: str, setting: Setting) -> str:
    """How a setting is shown: sigma=25, x3, nlf=0.001,1e-05 or real."""
    if task == "real":
        return "real"
    if task == "raw":
        a, b = setting  # type: ignore[misc]
        return f"nlf={a:g},{b:g}"
    return f"sigma={setting:g}" if task == "denoise" else f"x{setting:g}"


# --- images ------------------------------------------------------------------------------------

def load_images(dataset: Dataset, task: str, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(file name, clean float32 (H, W, C)) of the set's first ``limit`` images (gray sets in gray)."""
    files = dataset.files[:limit] if limit else dataset.files
    gray = dataset.spec.gray_for_denoise if dataset.spec is not None and task == "denoise" else False
    out = []
    for path in files:
        px = read_image(path).pixels
        if task == "raw":
            out.append((path.name, raw_clean(px)))
            continue
        if gray and px.shape[2] == 3:
            px = to_gray(px).astype(np.float32)
        out.append((path.name, px))
    return out


def _rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3): gray as R = G = B, alpha dropped."""
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[:, :, :3]


def load_pairs(dataset: Dataset, limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(noisy file name, clean, noisy) of the first ``limit`` real pairs, RGB float32 (H, W, 3) in [0, 1]."""
    out = []
    for path in dataset.files[:limit] if limit else dataset.files:
        partner = clean_partner(path)
        if partner is None:
            raise BenchError(f"{path.name}: not the noisy file of a *_real/*_mean pair (resolve the set for task "
                             f"real)")
        clean, noisy = (_rgb(read_image(p).pixels) for p in (partner, path))
        if clean.shape != noisy.shape:
            raise BenchError(f"{path.name} is {noisy.shape[1]}x{noisy.shape[0]} but {partner.name} is "
                             f"{clean.shape[1]}x{clean.shape[0]}")
        out.append((path.name, clean, noisy))
    return out


def quantize8(image: np.ndarray) -> np.ndarray:
    """An image rounded to 8-bit levels, float32 in [0, 1] (the real protocol scores what a user saves)."""
    return (np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def raw_clean(pixels: np.ndarray) -> np.ndarray:
    """The raw protocol's clean mosaic (H, W, 1): Eq. 13 with f_e = 2.2, f_c = 1, cropped to even size."""
    px = pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2, :3]
    t = torch.from_numpy(np.ascontiguousarray(px.transpose(2, 0, 1), dtype=np.float32))
    return np.ascontiguousarray(noise.raw_like(t, RAW_F_E, RAW_F_C).numpy().transpose(1, 2, 0))


def make_noisy_raw(clean: np.ndarray, nlf: tuple[float, float], dataset: str, image: str) -> np.ndarray:
    """Poisson-Gaussian noise a·Poisson(x/a) + N(0, b), clipped to [0, 1], with the image's fixed seed."""
    a, b = nlf
    gen = noise.generator(noise.seed_for(dataset, image, "raw", f"{a:g}", f"{b:g}"))
    t = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32))
    return noise.add_poisson_gaussian(t, a, b, gen, clip=True).numpy()


def make_noisy(clean: np.ndarray, sigma: float, dataset: str, image: str) -> np.ndarray:
    """clean + N(0, (σ/255)²) with the image's fixed seed; no clipping, no quantisation."""
    gen = noise.generator(noise.seed_for(dataset, image, f"{sigma:g}"))
    return noise.add_gaussian(torch.from_numpy(np.ascontiguousarray(clean)), sigma, gen).numpy()


def make_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of ``scale``, LR = bicubic 1/scale of its uint8 levels, as float)."""
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    if h < 2 * scale + 1 or w < 2 * scale + 1:
        raise BenchError(f"image {hr.shape[1]}x{hr.shape[0]} is too small for scale {scale}")
    hr = hr[:h, :w]
    hr8 = np.floor(np.clip(hr, 0, 1) * 255 + 0.5).astype(np.uint8)
    lr8 = imresize_np(hr8, 1.0 / scale)
    return hr8.astype(np.float32) / 255.0, lr8.astype(np.float32) / 255.0


def _timed(method: Method, x: np.ndarray, setting: Setting) -> tuple[np.ndarray, float, float]:
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        out = method.run(x, setting)
        seconds = time.perf_counter() - t0
    return np.asarray(out), seconds, mem.mb


# --- the runner --------------------------------------------------------------------------------

def run_bench(dataset: Dataset, methods: list[Method], config: BenchConfig,
              progress: Progress | None = None) -> BenchResult:
    """Run every method on every image at every setting; see the module docstring for the protocol."""
    if config.task not in TASKS:
        raise BenchError(f"task {config.task!r} is not available in n3 bench yet")
    if not methods:
        raise BenchError("no method to run")
    for m in methods:
        if m.task != config.task:
            raise BenchError(f"method {m.name} is for task {m.task}, not {config.task}")
    if config.task == "sr" and any(not float(s).is_integer() or s < 2 for s in config.settings):
        raise BenchError(f"SR scales must be integers >= 2, got {', '.join(f'{s:g}' for s in config.settings)}")
    if config.task == "real" and any(s != REAL_SETTING for s in config.settings):
        raise BenchError(f"task real has no settings (real pairs carry their own noise): use [{REAL_SETTING}]")
    items: list[tuple[str, np.ndarray, np.ndarray | None]]  # (name, clean, the real noisy image or None)
    if config.task == "real":
        config = replace(config, settings=[REAL_SETTING])
        items = list(load_pairs(dataset, config.limit))
    else:
        items = [(name, clean, None) for name, clean in load_images(dataset, config.task, config.limit)]
    result = BenchResult(dataset.name, config.task)
    runnable: dict[float, list[Method]] = {}
    for s in config.settings:
        runnable[s] = []
        for m in methods:
            reason = m.skip_reason(s)
            if reason:
                result.skipped.append((m.name, s, reason))
            else:
                runnable[s].append(m)
    total = sum(len(ms) for ms in runnable.values()) * len(items)
    done = 0
    per: dict[tuple[float, str], list[ImageResult]] = {}
    for s in config.settings:
        for m in runnable[s]:
            if m.prepare is not None:
                m.prepare(s)
        if config.warmup and items:
            _warm_up(runnable[s], items[0][1], dataset.name, items[0][0], config.task, s, items[0][2])
        for name, clean, real_noisy in items:
            if real_noisy is not None:
                ref, x = clean, real_noisy
            elif config.task == "denoise":
                ref, x = clean, make_noisy(clean, s, dataset.name, name)
            elif config.task == "raw":
                ref, x = clean, make_noisy_raw(clean, s, dataset.name, name)
            else:
                ref, x = make_lr(clean, int(s))
            panels: list[tuple[str, np.ndarray]] = []
            for m in runnable[s]:
                if progress is not None:
                    progress(done, total, f"{setting_label(config.task, s)} {name} {m.label}")
                out, seconds, mb = _timed(m, x, s)
                if out.ndim == 2:
                    out = out[:, :, None]
                if out.shape != ref.shape:
                    raise BenchError(f"method {m.name} returned shape {out.shape} for {name}, expected {ref.shape}")
                if config.task == "real":
                    out = quantize8(out)
                    p, q = metrics.psnr(out, ref), metrics.ssim(out, ref)
                elif config.task in ("denoise", "raw"):
                    p, q = metrics.psnr(out, ref), metrics.ssim(np.clip(out, 0.0, 1.0), ref)
                else:
                    p, q = metrics.sr_metrics(out, ref, int(s))
                r = ImageResult(name, m.label, s, p, q, seconds, ref.shape[0] * ref.shape[1] / 1e6, mb)
                result.images.append(r)
                per.setdefault((s, m.label), []).append(r)
                panels.append((f"{m.label} {p:.2f} dB", out))
                done += 1
            if config.save_images is not None:
                result.saved += _save(config, dataset.name, s, name, ref, x, panels, runnable[s])
    if progress is not None:
        progress(done, total, "done")
    paper_set = dataset.spec.name if dataset.spec is not None and config.task not in ("raw", "real") else None
    full = config.limit is None or config.limit >= len(dataset.files)
    for s in config.settings:
        for m in runnable[s]:
            rs = per.get((s, m.label), [])
            if not rs:
                continue
            result.summaries.append(Summary(
                dataset=dataset.name, task=config.task, method=m.label, setting=s,
                psnr=float(np.mean([r.psnr for r in rs])), ssim=float(np.mean([r.ssim for r in rs])),
                images=len(rs), seconds=float(sum(r.seconds for r in rs)),
                megapixels=float(sum(r.megapixels for r in rs)), peak_mb=max(r.peak_mb for r in rs),
                paper_psnr=paper_psnr(paper_set, config.task, s, m.paper) if paper_set else None,
                full_set=full and (dataset.spec is None or len(dataset.files) == dataset.spec.count),
                warning=m.warning(s), shipped=m.shipped, per_image=rs))
    return result


def _warm_up(methods: list[Method], clean: np.ndarray, dataset: str, name: str, task: str, s: Setting,
             real_noisy: np.ndarray | None = None) -> None:
    """One untimed call per method on a crop (first-call costs: thread pools, kernels, caches); ``real_noisy``:
    the real task's noisy image, whose crop is used as it is."""
    side = WARMUP_SIDE * (int(s) if task == "sr" else 1)
    crop = clean[:side, :side]
    if real_noisy is not None:
        x = real_noisy[:side, :side]
    elif task == "raw":
        crop = crop[: crop.shape[0] // 2 * 2, : crop.shape[1] // 2 * 2]
        x = make_noisy_raw(crop, s, dataset, name)
    else:
        x = make_noisy(crop, s, dataset, name) if task == "denoise" else make_lr(crop, int(s))[1]
    for m in methods:
        try:
            m.run(x, s)
        except (N3Error, ValueError):  # best effort: e.g. an NLF estimate needs more than a small crop
            pass


def _save(config: BenchConfig, dataset: str, s: Setting, name: str, ref: np.ndarray, x: np.ndarray,
          panels: list[tuple[str, np.ndarray]], methods: list[Method]) -> list[Path]:
    assert config.save_images is not None
    if config.task in ("denoise", "raw", "real"):
        first = [("clean", ref), (f"noisy {metrics.psnr(x, ref):.2f} dB", x)]
        panels = [p for p, m in zip(panels, methods, strict=True) if m.name != "noisy"]
    else:
        k = int(s)
        lr_big = np.repeat(np.repeat(x, k, axis=0), k, axis=1)[:ref.shape[0], :ref.shape[1]]
        first = [("HR", ref), (f"LR x{k}", lr_big)]
    folder = config.save_images / dataset / setting_label(config.task, s).replace("=", "").replace(",", "_")
    return save_comparison(folder, Path(name).stem, first + panels, ref)


# --- reports -----------------------------------------------------------------------------------

def _fmt(v: float | None, digits: int = 2, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–" if v is None else ("inf" if v > 0 else "-inf")
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


TABLE_HEADER = ("dataset", "setting", "method", "PSNR", "SSIM", "paper", "Δ", "img/s", "MP/s", "peak MB")


def table_rows(result: BenchResult) -> list[tuple[str, ...]]:
    """The report's rows as strings, in :data:`TABLE_HEADER` order."""
    rows = []
    for s in result.summaries:
        rows.append((s.dataset + ("" if s.full_set else f" ({s.images} img)"), setting_label(s.task, s.setting),
                     s.method, _fmt(s.psnr), _fmt(s.ssim, 4), _fmt(s.paper_psnr), _fmt(s.delta, signed=True),
                     _fmt(s.images_per_second), _fmt(s.megapixels_per_second, 3),
                     _fmt(s.peak_mb, 0 if s.peak_mb >= 10 else 1)))
    return rows


def to_markdown(result: BenchResult, command: str) -> str:
    """A markdown table, with the command line that produced it in a comment above."""
    lines = [f"<!-- {command.replace('-->', '- ->')} -->",
             "| " + " | ".join(TABLE_HEADER) + " |",
             "| " + " | ".join(["---"] * 3 + ["---:"] * (len(TABLE_HEADER) - 3)) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    return "\n".join(lines) + "\n"


def to_json(result: BenchResult) -> str:
    return json.dumps([s.record() for s in result.summaries], indent=2) + "\n"
