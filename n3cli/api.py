"""The Python API: arrays in, arrays out. The command line is a thin layer over these functions.

>>> from n3cli import denoise, super_resolve
>>> clean = denoise(noisy, sigma=25)      # noisy: (H, W) or (H, W, C) float in [0, 1]
>>> big = super_resolve(small, scale=3)   # (3·H, 3·W[, C])
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .devices import kept_free_bytes
from .devices import pick_device as _pick_device
from .engine import autocast, resolve_precision
from .errors import N3Error
from .imaging import noise
from .imaging.color import OPPONENT_NOISE_GAIN, opponent2rgb, rgb2opponent, rgb2ycbcr, ycbcr2rgb
from .imaging.noise import SIGMA_LIMIT, SIGMA_MAX
from .imaging.resize import SR_SCALES, imresize
from .imaging.tiling import TileSize, axis_starts, plan_tiles, tile_dims, tiled_apply
from .nn.fuse import fold_batchnorm
from .nn.narrow import use_narrow_convs
from .nn.nets import N3Net
from .weights import DEFAULT_FALLBACK, ModelInfo, resolve, shipped_default

if TYPE_CHECKING:
    from .raw.io import RawImage

#: ``progress(done, total)``: ``done`` of ``total`` units of work (tiles) are finished; ``done`` may be
#: fractional (progress inside a tile, reported per network stage).
Progress = Callable[[float, int], None]

#: Smallest image side (pixels) the models take: below it there is nothing for them to restore.
MIN_SIDE = 8
#: Default overlap of neighbouring tiles (pixels): covers most of the N3 search region (80×80).
DEFAULT_OVERLAP = 96
#: Rough peak bytes per pixel and batch item of an N3Net forward pass in float32 (measured, with margin).
BYTES_PER_PIXEL = 2400
MIN_TILE, MAX_TILE = 192, 2048


@dataclass
class Restorer:
    """A model ready to run: network, what it expects (``info``) and where it runs."""

    model: N3Net
    info: ModelInfo
    device: torch.device
    #: Average the outputs over the 8 flips and 90° rotations of the input ("self-ensemble"): 8× the time.
    self_ensemble: bool = False
    #: Arithmetic of the local CNNs: fp32, bf16 or fp16 (:mod:`n3cli.engine`; the N3 blocks stay float32).
    precision: str = "fp32"

    @property
    def name(self) -> str:
        return self.info.name

    def describe(self) -> str:
        """'<name> on <device>', the precision unless fp32, the self-ensemble when on (for messages)."""
        precision = f" ({self.precision})" if self.precision != "fp32" else ""
        return f"{self.name} on {self.device}{precision}" + (" (self-ensemble x8)" if self.self_ensemble else "")


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    return name if isinstance(name, torch.device) else _pick_device(name or "auto")


#: What ``precision="auto"`` means on a CPU with native bfloat16 (see :func:`n3cli.engine.resolve_precision`):
#: measured to cost ≤ 0.003 dB on Set12 / BSD68 σ 25 and Set5 ×2 for 1.3-1.8× the speed (docs/speed.md).
CPU_AUTO_PRECISION = "bf16"


def load_model(weights: str | Path | None = None, task: str = "denoise",
               device: str | torch.device | None = "auto", *, self_ensemble: bool = False,
               precision: str = "auto") -> Restorer:
    """Load shipped weights by name (default for ``task`` when None), a safetensors file, or an
    authors' checkpoint (``.t7``), onto ``device``. ``self_ensemble``, ``precision``: see :class:`Restorer`."""
    dev = pick_device(device)
    resolved = resolve_precision(precision, dev, CPU_AUTO_PRECISION)  # refused before any loading
    model, info = resolve(weights, task)
    if info.task not in (task, DEFAULT_FALLBACK.get(task)):  # raw also takes (conditional) denoisers
        raise N3Error(f"weights {info.name!r} are for task {info.task!r}, not {task!r}")
    return Restorer(prepare_for_inference(model, dev), info, dev, self_ensemble, resolved)


def prepare_for_inference(model: N3Net, device: torch.device) -> N3Net:
    """Eval mode, BatchNorm folded into the convolutions, narrow convolutions through the C kernel, channels-last
    memory layout (each measured faster: docs/speed.md)."""
    folded = use_narrow_convs(fold_batchnorm(model.eval()))
    assert isinstance(folded, N3Net)
    return folded.to(device).to(memory_format=torch.channels_last)


def available_memory() -> int:
    """Bytes of memory available to this process (Linux: MemAvailable and what its malloc keeps free, see
    :func:`~n3cli.devices.keep_freed_memory`; else physical memory / 2)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + kept_free_bytes()
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def auto_tile(batch: int, device: torch.device, bytes_per_pixel: int = BYTES_PER_PIXEL) -> int:
    """The largest tile side whose forward pass fits in a quarter of the free memory."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_memory()
    budget = min(free // 4, 6 << 30)
    side = int(math.sqrt(budget / (bytes_per_pixel * max(batch, 1))))
    return max(MIN_TILE, min(MAX_TILE, side // 16 * 16))


def even_tile(height: int, width: int, max_side: int, overlap: int) -> tuple[int, int]:
    """The tile (rows, columns) of at most ``max_side``² image pixels, neither side above :data:`MAX_TILE`, whose
    evenly spread tiles cover the image with the fewest pixels (then the fewest tiles).

    The largest square that fits in memory covers much more than the image when it is a little larger than one
    tile (2048² in squares of 1584: 4 tiles, 2.4× the pixels; 6000×4000: 12 tiles, 1.24×); tiles shaped to the
    image cover 2048² as 2 tiles of 2048×1072 (1.05×) and 6000×4000 as 3×4 of 1397×1572 (1.10×). Memory grows with a
    tile's pixel count, not its side."""
    if max_side <= overlap:
        return max_side, max_side
    budget = max_side * max_side
    # A tile keeps the whole overlap (run() halves it otherwise) and is no sliver (seams, the N3 search window).
    smallest = max(2 * overlap + 2, MIN_TILE)

    def side(n: int, count: int) -> int:  # evenly spread tiles overlapping by `overlap`
        return n if count == 1 else max(math.ceil((n + (count - 1) * overlap) / count), smallest)

    best: tuple[int, int, int, int] | None = None  # (pixels covered, tiles, rows, columns)
    for nh in range(1, height + 1):
        th = side(height, nh)
        if th > MAX_TILE or th * min(width, smallest) > budget:
            continue
        nw = 1
        while side(width, nw) > min(MAX_TILE, budget // th):
            nw += 1
        tw = side(width, nw)
        tiles = len(axis_starts(height, th, overlap)) * len(axis_starts(width, tw, overlap))
        cand = (tiles * th * tw, tiles, th, tw)
        if best is None or cand[:2] < best[:2]:
            best = cand
        if th <= smallest:
            break
    if best is None:  # the memory allows less than the smallest tile
        return max_side, max_side
    # A side spanning the whole image may be given larger (tiles are cut to the image): the overlap then stays whole
    # along the other axis.
    return max(best[2], smallest), max(best[3], smallest)


def _stage_progress(model: N3Net, progress: Progress, tiles: int) -> Callable[[], None]:
    """Report progress inside each tile, after every block of the network; returns a function that
    removes the hooks. Tile t of ``tiles`` at stage j of S reports done = t + j/S."""
    stages = [*getattr(model, "blocks", ()), *getattr(model, "nls", ())]
    if not stages:
        return lambda: None
    state = {"tile": 0, "stage": 0}

    def after_stage(*_: object) -> None:
        state["stage"] += 1
        if state["stage"] < len(stages):
            progress(state["tile"] + state["stage"] / len(stages), tiles)
        else:  # the tile's last stage: tiled_apply reports the finished tile itself
            state["tile"] += 1
            state["stage"] = 0

    handles = [m.register_forward_hook(after_stage) for m in stages]
    return lambda: [h.remove() for h in handles]  # type: ignore[func-returns-value]


def _check_tiling(tile: object, overlap: object) -> None:
    """A tile size (a whole number or a pair of them, at least 1) and an overlap (a whole number, at least 0)."""
    def whole(v: object) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if tile is not None:
        sides = list(tile) if isinstance(tile, tuple | list) else [tile]
        if len(sides) not in (1, 2) or not all(whole(v) and int(v) >= 1 for v in sides):  # type: ignore[arg-type]
            raise N3Error(f"tile size must be a whole number of pixels (or a pair of them) >= 1, got {tile!r}")
    if not whole(overlap) or int(overlap) < 0:  # type: ignore[call-overload]
        raise N3Error(f"tile overlap must be a whole number of pixels >= 0, got {overlap!r}")


def run(restorer: Restorer, x: Tensor, tile: TileSize | None = None, overlap: int = DEFAULT_OVERLAP,
        progress: Progress | None = None, noise: Tensor | None = None) -> Tensor:
    """Apply the network to x (N, C, H, W) on its device, in tiles when large; returns a CPU tensor.

    ``noise`` (N, 2): the NLF (a, b) of each item, for a noise-level-conditional model."""
    dev = restorer.device
    model = restorer.model
    h, w = x.shape[-2:]
    _check_tiling(tile, overlap)
    if tile is None:
        biggest = auto_tile(x.shape[0], dev)
        tile = even_tile(h, w, biggest, min(overlap, max(biggest // 2 - 1, 0)))
    shortest = min(tile_dims(tile))
    if shortest < 1:
        raise N3Error(f"tile size must be positive, got {tile}")
    overlap = min(overlap, max(shortest // 2 - 1, 0))
    level = None if noise is None else torch.as_tensor(noise, dtype=torch.float32).to(dev)
    passes = len(DIHEDRAL) if restorer.self_ensemble else 1
    half = autocast(restorer.precision, dev)  # the local CNNs only; figures in docs/speed.md
    # Denormal floats (tiny activations of real noisy images) are many times slower on x86; flushing them to
    # zero halves the forward pass and leaves the output unchanged (docs/speed.md). Switched off again after.
    flush = dev.type == "cpu" and torch.set_flush_denormal(True)
    remove_hooks = None
    if progress is not None:
        remove_hooks = _stage_progress(model, progress, passes * len(plan_tiles(h, w, tile, overlap)))

    def fn(part: Tensor) -> Tensor:
        part = part.to(dev).contiguous(memory_format=torch.channels_last)
        out = model(part) if level is None else model(part, level)
        return out.float().cpu().contiguous()

    try:
        with torch.inference_mode(), half:
            if not restorer.self_ensemble:
                return _finite(tiled_apply(fn, x, tile, overlap, progress))
            total: Tensor | None = None
            for t, (flip, turns) in enumerate(DIHEDRAL):
                def part_progress(i: float, n: int, t: int = t) -> None:
                    if progress is not None:
                        progress(t * n + i, len(DIHEDRAL) * n)

                turned = tile_dims(tile)[::-1] if turns % 2 else tile  # the tile turns with the image
                y = _undo(tiled_apply(fn, _transform(x, flip, turns), turned, overlap, part_progress), flip, turns)
                total = y if total is None else total.add_(y)
            assert total is not None
            return _finite(total.div_(len(DIHEDRAL)))
    finally:
        if remove_hooks is not None:
            remove_hooks()
        if flush:
            torch.set_flush_denormal(False)


def _finite(y: Tensor) -> Tensor:
    """The network's output, refused where it holds NaN or infinite values (never handed on as an image)."""
    if not bool(torch.isfinite(y).all()):
        raise N3Error("the network's output holds NaN or infinite values (an input far from anything the model was "
                      "trained on, or an overflow at reduced precision, which fp32 avoids)")
    return y


#: The 8 symmetries of the square (flip left-right or not, then 0-3 quarter turns): the self-ensemble.
DIHEDRAL = tuple((flip, turns) for flip in (False, True) for turns in range(4))


def _transform(x: Tensor, flip: bool, turns: int) -> Tensor:
    y = x.flip(-1) if flip else x
    return torch.rot90(y, turns, dims=(-2, -1)) if turns else y


def _undo(y: Tensor, flip: bool, turns: int) -> Tensor:
    y = torch.rot90(y, -turns, dims=(-2, -1)) if turns else y
    return y.flip(-1) if flip else y


def estimate_sigma(image: np.ndarray) -> float:
    """Noise σ (0-255 scale) of an image in [0, 1], by the wavelet MAD estimator (Donoho), averaged
    over channels (scikit-image's ``estimate_sigma``)."""
    return float(np.mean(estimate_channel_sigmas(image)))


def estimate_channel_sigmas(image: np.ndarray, color: str = "rgb", channels: int | None = None) -> tuple[float, ...]:
    """Noise σ (0-255 scale) of each channel of an image in [0, 1] (wavelet MAD); ``color="opponent"``:
    of the opponent channels of an RGB image (:func:`n3cli.imaging.color.rgb2opponent`), measured there,
    so noise that is correlated across R, G and B (demosaicked photos) is measured as it is. ``channels``: only
    the first so many."""
    try:
        import pywt  # noqa: F401  (the estimator's wavelets; scikit-image imports it only when called)
        from skimage.restoration import estimate_sigma as _est
    except ImportError as exc:
        raise N3Error(f"cannot estimate the noise level ({exc}); give sigma, or install PyWavelets") from None

    img = _hwc(image)[:, :, :3]
    if color == "opponent":
        img = rgb2opponent(img)
    img = img[:, :, :channels] if channels else img
    with warnings.catch_warnings():  # a flat channel has no nonzero detail coefficient: NaN ("mean of empty slice")
        warnings.simplefilter("ignore", RuntimeWarning)
        values = _est(img, channel_axis=-1, average_sigmas=False)
    return tuple(float(v) * 255.0 if math.isfinite(v) else 0.0 for v in values)


#: How ``denoise`` treats colour: ``opponent`` (luma and two chroma channels, each with its own noise level),
#: ``rgb`` (channel by channel), ``auto`` (opponent for Gaussian noise and a noise-level-conditional model).
COLOR_MODES = ("auto", "opponent", "rgb")


def color_mode(info: ModelInfo, channels: int, color: str = "auto", nlf: tuple[float, float] | None = None) -> str:
    """The colour handling ``denoise`` uses: ``color`` (one pass) for a colour model, else ``gray`` for 1-channel
    images, ``opponent`` or ``rgb``.

    Opponent space needs a noise-level-conditional model (its channels carry different noise levels) and
    Gaussian noise (an NLF σ²(x) = a·x + b of R, G and B is not one of the opponent channels' values)."""
    if color not in COLOR_MODES:
        raise N3Error(f"unknown colour mode {color!r}; expected one of {', '.join(COLOR_MODES)}")
    if info.channels == 3:  # a colour model: RGB in one pass (a gray image as R = G = B)
        if color != "auto":
            raise ColorModeError(f"{info.name} denoises colour in one pass; colour mode {color} is for gray models")
        return "color"
    if channels < 3:
        return "gray"
    if color == "auto":
        return "opponent" if info.conditional and nlf is None else "rgb"
    if color == "opponent" and not info.conditional:
        raise ColorModeError(f"colour mode opponent needs a noise-level-conditional model; {info.name} is trained "
                             "for one sigma (colour mode rgb works with it)")
    if color == "opponent" and nlf is not None:
        raise ColorModeError("colour mode opponent takes Gaussian noise (a sigma), not an NLF (colour mode rgb does)")
    return color


class ColorModeError(N3Error):
    """A colour mode that cannot serve this model or noise; ``rgb`` can."""

    about = "color"


def _hwc(image: np.ndarray, channels: tuple[int, ...] = (1, 3, 4)) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in channels:
        allowed = ", ".join(str(c) for c in channels)
        raise N3Error(f"expected an (H, W) or (H, W, C) image with C in {allowed}; got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif not np.issubdtype(arr.dtype, np.floating):
        raise N3Error(f"expected a float, uint8 or uint16 image, got {arr.dtype}")
    else:
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise N3Error("the image holds NaN or infinite values")
        check_float_range(arr)
    return arr


#: Where the central 98 % of a float image's values must lie: [0, 1] and what noise up to σ = SIGMA_LIMIT (0.59 on
#: that scale) adds to it (2.33 σ at the 1st / 99th percentile). An image on 0-255 or 0-65535 is far outside.
FLOAT_RANGE = (-1.5, 2.5)


def check_float_range(arr: np.ndarray) -> None:
    """Refuse float pixels on another scale than [0, 1] (e.g. 0-255): the models' output there is no estimate of
    the image. Judged on the 1st and 99th percentiles (of every channel of a grid of about 250,000 pixels), so noise
    may reach beyond [0, 1]."""
    lo, hi = _value_span(arr)
    if lo < FLOAT_RANGE[0] or hi > FLOAT_RANGE[1]:
        raise N3Error(f"float pixel values span {lo:.4g} to {hi:.4g} (1st to 99th percentile); images are expected "
                      "in [0, 1]: scale them first (e.g. divide 0-255 values by 255)")


def _value_span(arr: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of an image's values, over a grid of about 250,000 pixels (all their channels)."""
    step = max(1, math.isqrt(arr.shape[0] * arr.shape[1] // 250_000))
    lo, hi = np.percentile(arr[::step, ::step], [1, 99])
    return float(lo), float(hi)


def check_mosaic_range(mosaic: np.ndarray) -> None:
    """Refuse a mosaic that is not normalised to [0, 1] between black and white level (e.g. raw integers): judged
    like :func:`check_float_range`, on the 1st and 99th percentiles, so noise below black and clipped highlights
    pass."""
    lo, hi = _value_span(mosaic)
    if lo < FLOAT_RANGE[0] or hi > FLOAT_RANGE[1]:
        raise N3Error(f"mosaic values span {lo:.4g} to {hi:.4g} (1st to 99th percentile); a mosaic is expected "
                      "normalised to [0, 1] between black and white level (read_raw gives it so)")


def _check_side(img: np.ndarray) -> np.ndarray:
    if min(img.shape[:2]) < MIN_SIDE:
        raise N3Error(f"image of {img.shape[1]}x{img.shape[0]} pixels is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    return img


@dataclass(frozen=True)
class DenoisePlan:
    """What :func:`denoise` will do with one image, decided once (by :func:`plan_denoise`) and then carried out.

    ``mode``: ``gray``, ``opponent``, ``rgb`` or ``color`` (:func:`color_mode`); ``sigmas``: the Gaussian σ (0-255)
    of each processed channel (one for ``color``; None with an NLF or blind); ``nlf``: (a, b) or None;
    ``estimated``: whether the σ were measured from the image; ``blind``: no level at all, the model infers it
    (a blind-capable model with none given); ``notes``: warnings for the user (noise beyond what the model was
    trained on)."""

    mode: str
    sigmas: tuple[float, ...] | None
    nlf: tuple[float, float] | None = None
    estimated: bool = False
    notes: tuple[str, ...] = ()
    blind: bool = False


def plan_denoise(image: np.ndarray, info: ModelInfo, sigma: float | Sequence[float] | None = None, *,
                 nlf: tuple[float, float] | None = None, color: str = "auto") -> DenoisePlan:
    """The colour mode, the σ of each processed channel (given, or estimated from ``image``) and the notes.

    ``sigma``: one σ of i.i.d. noise on the input's channels (0-255 scale), or one per processed channel;
    ``nlf``: σ²(x) = a·x + b instead (noise-level-conditional models); neither, with a blind-capable model: the
    plan is blind (the model infers the noise). See :func:`denoise`."""
    img = _hwc(image)
    rgb = img[:, :, :3]
    if nlf is not None:
        if sigma is not None:
            raise N3Error("give either sigma or nlf, not both")
        if not info.conditional:
            raise N3Error(f"a noise level function needs a noise-level-conditional model; {info.name} is not")
        nlf = check_nlf(nlf)
        note = untrained_noise_note(info, nlf=nlf)
        return DenoisePlan(color_mode(info, rgb.shape[2], color, nlf), None, nlf, notes=(note,) if note else ())
    mode = color_mode(info, rgb.shape[2], color, None)
    if sigma is None and info.blind_capable:
        return DenoisePlan(mode, None, None, blind=True)
    if not info.conditional:  # a one-σ model takes no noise level: nothing to estimate, and a given σ is not used
        fixed = None if info.sigma is None else (float(info.sigma),) * _plan_sigma_count(mode, conditional=False)
        count = 1 if isinstance(sigma, (int, float)) or mode in ("gray", "color") else 3
        given = () if sigma is None else _check_sigmas(sigma, count)
        if any(info.sigma is None or abs(v - info.sigma) > 1e-6 for v in given):
            own = f"sigma {info.sigma:g}" if info.sigma is not None else "one noise level"
            shown = "/".join(f"{v:g}" for v in given)
            note = f"{info.name} is trained for {own} only and takes no noise level: sigma {shown} is not used"
            return DenoisePlan(mode, fixed, None, notes=(note,))
        return DenoisePlan(mode, fixed, None)
    sigmas = channel_sigmas(rgb, sigma, mode)
    note = untrained_noise_note(info, sigma=max(sigmas))
    return DenoisePlan(mode, sigmas, None, sigma is None, (note,) if note else ())


def denoise(image: np.ndarray, sigma: float | Sequence[float] | None = None, *,
            nlf: tuple[float, float] | None = None, model: Restorer | str | Path | None = None,
            tile: int | None = None, overlap: int = DEFAULT_OVERLAP, device: str | torch.device | None = "auto",
            progress: Progress | None = None, color: str = "auto", keep_mean: bool = True,
            plan: DenoisePlan | None = None) -> np.ndarray:
    """Denoise a gray or colour image (H, W) / (H, W, C), float in [0, 1] (or uint8/uint16).

    ``sigma``: Gaussian noise σ on the 0-255 scale (None: inferred by a blind-capable model, else estimated from
    the image), or one σ per channel processed (R, G, B, or the opponent channels); ``nlf=(a, b)``: a noise level
    function σ²(x) = a·x + b instead (noise-level-conditional models). ``model`` None: the shipped default for
    the image (for colour images the ``denoise-color`` default, a colour model run in one pass, where one is shipped).
    ``color`` (see :func:`color_mode`): with a gray model, colour images are denoised either in an
    opponent colour space (luma and two chroma channels, as CBM3D does: i.i.d. RGB noise of σ becomes
    σ/√3, σ/√2 and σ·√6/4 there, and the chroma channels are smooth) or channel by channel in RGB. A
    fourth (alpha) channel is returned untouched. ``keep_mean`` (noise-level-conditional models, Gaussian σ):
    give the removed residual's local mean back (:func:`keep_local_mean`); False returns the network's output.
    ``plan``: a :func:`plan_denoise` result to carry out (its notes are then the caller's to show; without
    it the plan is made here and its notes are issued as warnings). Returns float32 of the input's shape.
    """
    img = _check_side(_hwc(image))
    if isinstance(model, Restorer):
        restorer = model
    else:
        restorer = load_model(model, choose_denoiser(img, model, sigma, nlf, color).task, device)
    if plan is None:
        plan = plan_denoise(img, restorer.info, sigma, nlf=nlf, color=color)
        for note in plan.notes:
            warnings.warn(note, stacklevel=2)
    else:
        _check_plan(plan, img, restorer.info, sigma is not None or nlf is not None, color)
    alpha = img[:, :, 3:] if img.shape[2] == 4 else None
    rgb = img[:, :, :3] if alpha is not None else img
    planes = rgb2opponent(rgb) if plan.mode == "opponent" else rgb
    chw = torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1)))
    if restorer.info.channels == 3:  # one pass over RGB (a gray image as R = G = B)
        x = chw[None].expand(1, 3, -1, -1)
    else:
        x = chw[:, None]  # channels as batch
    level = None
    if restorer.info.conditional and not plan.blind:
        gauss = [(0.0, (s / 255.0) ** 2) for s in plan.sigmas or ()]
        level = torch.tensor([plan.nlf] * x.shape[0] if plan.nlf is not None else gauss)
    out = run(restorer, x, tile, overlap, progress, noise=level)
    if restorer.info.channels == 3:
        out = out[0] if rgb.shape[2] == 3 else out[0].mean(0, keepdim=True)
    else:
        out = out[:, 0]
    y = out.numpy().transpose(1, 2, 0)
    if restorer.info.conditional and plan.nlf is None and keep_mean:
        y = keep_local_mean(planes, y)
    if plan.mode == "opponent":
        y = opponent2rgb(y)
    if alpha is not None:
        y = np.concatenate([y, alpha], axis=2)
    return y.reshape(np.shape(image)) if np.ndim(image) == 2 else y


def _plan_sigma_count(mode: str, conditional: bool) -> int:
    """How many σ a :class:`DenoisePlan` of colour mode ``mode`` holds: one for a gray image and for the one pass of a
    conditional colour model, else one per R, G, B or opponent channel."""
    return 1 if mode == "gray" or (mode == "color" and conditional) else 3


def _check_plan(plan: DenoisePlan, img: np.ndarray, info: ModelInfo, level_given: bool, color: str) -> None:
    """A plan handed to :func:`denoise` must fit the image and the model; it comes instead of sigma / nlf, and a
    colour mode given beside it must be the plan's."""
    if level_given:
        raise N3Error("give either a plan or sigma / nlf, not both (the plan holds the noise level)")
    if color not in ("auto", plan.mode):
        raise N3Error(f"colour mode {color!r} differs from the plan's ({plan.mode!r})")
    channels = min(img.shape[2], 3)
    fits = {"gray": channels == 1 and info.channels == 1, "color": info.channels == 3,
            "opponent": channels == 3 and info.channels == 1, "rgb": channels == 3 and info.channels == 1}
    if not fits.get(plan.mode, False):
        kind = "gray" if channels == 1 else "colour"
        raise N3Error(f"the plan's colour mode {plan.mode!r} does not fit a {kind} image and the model {info.name}")
    count = _plan_sigma_count(plan.mode, info.conditional)
    if plan.sigmas is not None and len(plan.sigmas) != count:
        raise N3Error(f"the plan holds {len(plan.sigmas)} sigma(s); colour mode {plan.mode} takes {count}")


#: Luma noise σ (0-255 scale; wavelet MAD of the opponent luma) under which a colour image given no noise level goes
#: to the shipped colour model, blind. Camera JPEG noise is coarse (demosaicked, noise-reduced, compressed) and this
#: estimator sees little of it (0.3–0.9 on PolyU-val's 22 photos, whose luma noise is 2.4–5.2), while i.i.d. noise of
#: σ ≥ 3.5 on RGB shows ≥ 2 there and goes to the gray model with its estimated σ, as before (docs/real-photos.md).
FINE_NOISE_LIMIT = 2.0


@dataclass(frozen=True)
class DenoiserChoice:
    """Which registry default serves an image (``task``: ``denoise`` or ``denoise-color``) and why (``reason``)."""

    task: str
    reason: str = ""


def choose_denoiser(image: np.ndarray, weights: str | Path | None = None, sigma: object = None,
                    nlf: tuple[float, float] | None = None, color: str = "auto") -> DenoiserChoice:
    """The default model for an image: the shipped colour model (``denoise-color``, blind) for a colour image given
    no weights, no noise level and no colour mode, whose fine-scale noise is under :data:`FINE_NOISE_LIMIT` (camera
    noise, or none); otherwise the gray default (``denoise``: channel by channel or in opponent colour, where a
    given or estimated σ serves Gaussian-like noise best so far)."""
    img = _hwc(image)
    if (weights is not None or nlf is not None or sigma is not None or color != "auto" or img.shape[2] < 3
            or shipped_default("denoise-color") is None):
        return DenoiserChoice("denoise")
    luma = estimate_channel_sigmas(img[:, :, :3], "opponent", channels=1)[0]
    if luma < FINE_NOISE_LIMIT:
        return DenoiserChoice("denoise-color", f"fine-scale noise {luma:.1f} (luma): camera noise or none")
    return DenoiserChoice("denoise", f"fine-scale noise {luma:.1f} (luma): Gaussian-like")


#: Side (pixels) of the box filter, applied three times (≈ a Gaussian of σ 32 px), that takes the local
#: mean of the removed residual in :func:`keep_local_mean`.
MEAN_WINDOW = 65


def keep_local_mean(noisy: np.ndarray, denoised: np.ndarray, window: int = MEAN_WINDOW) -> np.ndarray:
    """The denoised image with the local mean of the input: ``denoised + lowpass(noisy - denoised)``.

    Gaussian noise has zero mean, so what a denoiser removes must average to zero over a large window.
    Told a σ above the true one, the conditional network shifts the mean (σ 25 on σ 15 noise: +2.8 levels,
    a pink cast in opponent colour); giving the residual's local mean back removes the shift and leaves
    results at the right σ unchanged (docs/color-cast.md). (H, W, C) float arrays."""
    from scipy.ndimage import uniform_filter

    resid = (noisy - denoised).astype(np.float32)
    size = (window, window, 1)
    for _ in range(3):
        resid = uniform_filter(resid, size=size, mode="reflect")
    return denoised + resid


def check_sigma_value(value: float) -> float:
    """One noise σ (0-255 scale): finite, >= 0 and at most :data:`SIGMA_LIMIT`, else an N3Error."""
    if not math.isfinite(value) or value < 0:
        raise N3Error(f"sigma must be a finite number >= 0, got {value:g}")
    if value > SIGMA_LIMIT:
        raise N3Error(f"sigma {value:g} is above the limit of {SIGMA_LIMIT:g} (twice the largest sigma the models "
                      "are trained on; beyond it the output is not an estimate of the image)")
    return value


def _check_sigmas(sigma: float | Sequence[float], channels: int) -> tuple[float, ...]:
    values = (float(sigma),) * channels if isinstance(sigma, (int, float)) else tuple(float(s) for s in sigma)
    if len(values) != channels:
        raise N3Error(f"expected one sigma or {channels} (one per channel), got {len(values)}")
    return tuple(check_sigma_value(v) for v in values)


def channel_sigmas(rgb: np.ndarray, sigma: float | Sequence[float] | None, mode: str) -> tuple[float, ...]:
    """The σ (0-255) of each channel ``denoise`` processes in colour mode ``mode`` (gray / rgb / opponent).

    None: estimated (per opponent channel in opponent mode, else the channels' mean); one number: the σ of
    i.i.d. noise on every input channel (scaled by :data:`OPPONENT_NOISE_GAIN` in opponent mode); a sequence:
    each processed channel's own σ."""
    channels = _plan_sigma_count(mode, conditional=True)  # (a given σ is the input of conditional models only)
    if mode == "color" and not isinstance(sigma, (int, float)) and sigma is not None:
        values = _check_sigmas(sigma, len(tuple(sigma)))
        if len(set(values)) != 1:
            raise N3Error("a colour model takes one sigma for R, G and B, not one per channel")
        sigma = values[0]
    if sigma is None:
        found = estimate_channel_sigmas(rgb, "opponent") if mode == "opponent" else (estimate_sigma(rgb),) * channels
        if max(found) > SIGMA_LIMIT:
            raise N3Error(f"estimated sigma {max(found):.0f} is above the limit of {SIGMA_LIMIT:g}: beyond it the "
                          "output is no estimate of the image")
        return found
    if isinstance(sigma, (int, float)) and mode == "opponent":
        base = _check_sigmas(sigma, 1)[0]
        return tuple(base * g for g in OPPONENT_NOISE_GAIN)
    return _check_sigmas(sigma, channels)


def untrained_noise_note(info: ModelInfo, sigma: float | None = None,
                         nlf: tuple[float, float] | None = None) -> str | None:
    """A warning text when the noise is stronger than a noise-level-conditional model saw in training, else None.

    Training draws Gaussian σ up to 75 and raw NLFs whose σ at mid-grey stays below that (a ≤ 0.1, b ≤ a/10),
    so the test is the noise σ at mid-grey against 75/255."""
    if not info.conditional or (sigma is None and nlf is None):
        return None
    level = sigma if nlf is None else 255.0 * noise.nlf_sigma_at(nlf[0], nlf[1], 0.5)
    if level <= SIGMA_MAX:
        return None
    what = f"sigma {level:.1f}" if nlf is None else f"the NLF's noise (sigma {level:.1f} at mid-grey)"
    return f"{what} is above the sigma <= {SIGMA_MAX:g} {info.name} was trained on; expect residual noise"


#: Largest SR factor accepted: twice the largest trained one (beyond it the output is little more than bicubic).
MAX_SCALE = 2 * max(SR_SCALES)


def check_scale(scale: object) -> int:
    """The SR factor as an int: an integer >= 2 (2.0 is accepted, 2.5 is refused with an N3Error)."""
    if isinstance(scale, bool):
        raise N3Error(f"scale must be an integer (2, 3 or 4), got {scale!r}")
    try:
        value = float(scale)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise N3Error(f"scale must be an integer (2, 3 or 4), got {scale!r}") from None
    if not math.isfinite(value) or not value.is_integer():
        raise N3Error(f"scale must be an integer (2, 3 or 4), got {scale!r}")
    if value < 2:
        raise N3Error(f"scale must be at least 2, got {scale!r}")
    if value > MAX_SCALE:
        raise N3Error(f"scale must be at most {MAX_SCALE} (the models are trained for "
                      f"{', '.join(map(str, SR_SCALES))}), got {scale!r}")
    return int(value)


def untrained_scale_note(scale: int) -> str | None:
    """A warning text when ``scale`` is not one the SR models were trained for, else None."""
    if scale in SR_SCALES:
        return None
    return f"scale {scale} is outside the trained scales {', '.join(map(str, SR_SCALES))}; results may be poor"


def super_resolve(image: np.ndarray, scale: int, *, model: Restorer | str | Path | None = None,
                  tile: int | None = None, overlap: int = DEFAULT_OVERLAP,
                  device: str | torch.device | None = "auto", progress: Progress | None = None) -> np.ndarray:
    """Upscale a gray or colour image (H, W) / (H, W, C), float in [0, 1] (or uint8/uint16), by an
    integer ``scale``; returns float32 (scale·H, scale·W[, C]) clipped to [0, 1].

    As the SR models are trained (VDSR-style): the image is upscaled with MATLAB bicubic
    (:func:`~n3cli.imaging.resize.imresize`) and the network restores the luma. Gray images go
    through the network as they are; RGB is converted with MATLAB ``rgb2ycbcr``, the network
    restores Y, Cb and Cr stay bicubic; an alpha channel (C = 2 or 4, last) is upscaled bicubically.
    The models are trained for scales 2, 3 and 4; larger integers run with a warning (untrained).
    """
    s = check_scale(scale)
    note = untrained_scale_note(s)
    if note is not None:
        warnings.warn(note, stacklevel=2)
    img = _hwc(image, channels=(1, 2, 3, 4))
    if min(img.shape[:2]) * s < MIN_SIDE:
        raise N3Error(f"image of {img.shape[1]}x{img.shape[0]} pixels is too small: the ×{s} output would be under "
                      f"{MIN_SIDE}x{MIN_SIDE}")
    restorer = model if isinstance(model, Restorer) else load_model(model, "sr", device)
    if restorer.info.task != "sr":
        raise N3Error(f"model {restorer.name!r} is for task {restorer.info.task!r}, not 'sr'")
    if restorer.model.config.in_channels != 1 or getattr(restorer.model, "conditional", False):
        raise N3Error(f"model {restorer.name!r} takes {restorer.model.config.in_channels} input planes; "
                      "SR models take one (the bicubic-upscaled luma)")
    c = img.shape[2]
    alpha = img[:, :, c - 1:] if c in (2, 4) else None
    color = img[:, :, :c - 1] if alpha is not None else img
    chw = torch.from_numpy(np.ascontiguousarray(color.transpose(2, 0, 1)))
    planes = rgb2ycbcr(chw) if chw.shape[0] == 3 else chw
    up = imresize(planes, float(s))  # (C, s·H, s·W), float32
    y = run(restorer, up[None, :1], tile, overlap, progress)[0]
    out = torch.cat([y, up[1:]], dim=0)
    if out.shape[0] == 3:
        out = ycbcr2rgb(out)
    result = out.clamp_(0.0, 1.0).numpy().transpose(1, 2, 0)
    if alpha is not None:
        a = imresize(torch.from_numpy(np.ascontiguousarray(alpha[:, :, 0])), float(s)).clamp_(0.0, 1.0)
        result = np.concatenate([result, a.numpy()[:, :, None]], axis=2)
    result = np.ascontiguousarray(result, dtype=np.float32)
    return result[:, :, 0] if np.ndim(image) == 2 else result


# --- camera raw -------------------------------------------------------------------------------

#: How the Bayer mosaic goes through the gray model (see :func:`denoise_mosaic`).
CFA_MODES = ("planes", "mosaic")
DEFAULT_CFA = "planes"


@dataclass(frozen=True)
class NLFInfo:
    """The noise level function used for a raw, σ²(x) = a·x + b with x the normalised mosaic value
    (0 at the black level, 1 at the white level), and where it came from: ``"given"`` (passed in),
    ``"dng"`` (the file's NoiseProfile tag) or ``"estimated"`` (:func:`n3cli.raw.estimate_raw_nlf`); ``note``: why
    a NoiseProfile tag the file holds was not used, else empty."""

    a: float
    b: float
    source: str
    note: str = ""

    def sigma(self, x: float = 0.5) -> float:
        """Noise standard deviation at ``x`` (default mid-grey), in normalised units."""
        return noise.nlf_sigma_at(self.a, self.b, x)


def check_nlf(nlf: tuple[float, float] | list[float]) -> tuple[float, float]:
    """(a, b) as floats; both finite and non-negative, else an N3Error."""
    try:
        a, b = (float(v) for v in nlf)
    except (TypeError, ValueError):
        raise N3Error(f"nlf must be two numbers (a, b), got {nlf!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
        raise N3Error(f"nlf values must be finite and non-negative, got ({a:g}, {b:g})")
    level = 255.0 * noise.nlf_sigma_at(a, b, 0.5)
    if level > SIGMA_LIMIT:
        raise N3Error(f"nlf ({a:g}, {b:g}) gives sigma {level:.4g} at mid-grey (0-255 scale), above the limit of "
                      f"{SIGMA_LIMIT:g} (twice the largest noise the models are trained on)")
    return a, b


def raw_nlf(raw: RawImage, nlf: tuple[float, float] | None = None) -> NLFInfo:
    """The NLF of a :class:`~n3cli.raw.RawImage`: ``nlf`` when given, else the DNG NoiseProfile of
    the raw's file, else estimated from its mosaic."""
    if nlf is not None:
        return NLFInfo(*check_nlf(nlf), "given")
    info = _raw_nlf_found(raw)
    try:
        check_nlf((info.a, info.b))
    except N3Error as exc:
        where = "in the DNG NoiseProfile tag" if info.source == "dng" else "estimated from the image"
        raise NLFUnknownError(f"{raw.path}: the noise level function {where}: {exc}") from None
    return info


def _raw_nlf_found(raw: RawImage) -> NLFInfo:
    """The NLF of a raw from its DNG NoiseProfile tag, else estimated from its mosaic."""
    from .raw import RawError, estimate_raw_nlf, nlf_from_dng

    try:
        tag = nlf_from_dng(raw.path)
    except RawError:  # not TIFF-based (e.g. CR3, RAF) or no file behind the RawImage
        tag = None
    if tag is not None and math.isfinite(tag[0]) and math.isfinite(tag[1]) and min(tag) >= 0:
        return NLFInfo(tag[0], tag[1], "dng")
    note = "" if tag is None else f"the DNG NoiseProfile tag ({tag[0]:g}, {tag[1]:g}) is not a valid noise level " \
        "(not finite, or negative) and was ignored"
    why = f"; {note}" if note else ""
    try:
        est = estimate_raw_nlf(raw)
    except ValueError as e:
        raise NLFUnknownError(f"{raw.path}: cannot estimate the noise level ({e}){why}") from None
    if not (math.isfinite(est.a) and math.isfinite(est.b)):
        raise NLFUnknownError(f"{raw.path}: cannot estimate the noise level (too little flat area){why}")
    return NLFInfo(est.a, est.b, "estimated", note)


class NLFUnknownError(N3Error):
    """No usable noise level function for a raw: none given, and the DNG NoiseProfile tag missing or out of range
    and none estimable (or the estimate out of range); give ``nlf``."""

    about = "nlf"


def load_raw_model(model: Restorer | str | Path | None = None, device: str | torch.device | None = "auto",
                   *, self_ensemble: bool = False, precision: str = "auto") -> Restorer:
    """A noise-level-conditional denoiser for raw data, else an N3Error.

    None: the shipped raw model (task ``raw``, trained on camera raw CFA planes), or the default denoiser
    where none is shipped; a name or file: a ``raw`` model or a noise-level-conditional ``denoise`` model."""
    restorer = model if isinstance(model, Restorer) else \
        load_model(model, "raw", device, self_ensemble=self_ensemble, precision=precision)
    if not restorer.info.conditional:
        trained = f" (trained for sigma {restorer.info.sigma:g} only)" if restorer.info.sigma is not None else ""
        raise N3Error(f"raw denoising needs a noise-level-conditional model (input planes image, sqrt_a, sqrt_b); "
                      f"{restorer.name!r} is not{trained}")
    if restorer.info.channels != 1:  # each CFA plane (or the whole mosaic) goes through as one gray image
        raise N3Error(f"raw denoising needs a gray model (one channel per CFA plane); {restorer.name!r} takes "
                      f"{restorer.info.channels} channels (an RGB model)")
    return restorer


def denoise_mosaic(mosaic: np.ndarray, pattern: str, nlf: tuple[float, float], *,
                   model: Restorer | str | Path | None = None, cfa: str = DEFAULT_CFA, tile: int | None = None,
                   overlap: int = DEFAULT_OVERLAP, device: str | torch.device | None = "auto",
                   progress: Progress | None = None) -> np.ndarray:
    """Denoise a normalised Bayer mosaic (H, W) with a noise-level-conditional model and its NLF.

    ``cfa="planes"`` (default): the mosaic is packed into its four half-resolution planes R, G1, G2, B,
    which go through the gray model as one batch of 4 (shared tiling and progress) and are unpacked again;
    each plane holds one colour, i.e. a gray image like those the model was trained on, and the same
    (a, b) apply since the NLF is defined on the normalised mosaic values. ``cfa="mosaic"``: the whole
    mosaic as one gray image. Planes is the default: the mosaic's colour checkerboard is structure a gray model
    never saw. The network sees the mosaic clipped to [0, 1], as a sensor clips and as it was trained (figures
    for both choices: docs/raw.md).
    Returns float32 (H, W).
    """
    from .raw import pack_bayer, unpack_bayer

    if cfa not in CFA_MODES:
        raise N3Error(f"cfa must be one of {', '.join(CFA_MODES)}, got {cfa!r}")
    m = np.asarray(mosaic, dtype=np.float32)
    if m.ndim != 2:
        raise N3Error(f"expected a 2-D Bayer mosaic, got shape {m.shape}")
    if m.shape[0] < 4 or m.shape[1] < 4:
        raise N3Error(f"mosaic of shape {m.shape} is too small to denoise")
    if not np.all(np.isfinite(m)):
        raise N3Error("the mosaic holds NaN or infinite values")
    check_mosaic_range(m)
    a, b = check_nlf(nlf)
    restorer = load_raw_model(model, device)
    t = torch.from_numpy(np.ascontiguousarray(m)).clamp(0.0, 1.0)
    x = pack_bayer(t, pattern)[:, None] if cfa == "planes" else t[None, None]  # (4 or 1, 1, h, w)
    y = run(restorer, x, tile, overlap, progress, noise=torch.tensor([(a, b)]).expand(x.shape[0], 2))[:, 0]
    out = unpack_bayer(y, pattern, m.shape) if cfa == "planes" else y[0]
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


def raw_denoise(raw: RawImage, nlf: tuple[float, float] | None = None, *,
                model: Restorer | str | Path | None = None, cfa: str = DEFAULT_CFA, tile: int | None = None,
                overlap: int = DEFAULT_OVERLAP, device: str | torch.device | None = "auto",
                progress: Progress | None = None) -> tuple[np.ndarray, NLFInfo]:
    """Denoise a camera raw (:class:`~n3cli.raw.RawImage`, from :func:`n3cli.raw.read_raw`).

    Returns the denoised normalised mosaic (float32, the raw's shape; develop it with
    :func:`n3cli.raw.develop` or save it with :func:`n3cli.raw.write_dng`) and the :class:`NLFInfo` used.
    The NLF is ``nlf=(a, b)`` when given, else the DNG NoiseProfile tag, else estimated from the mosaic.
    ``model``: a noise-level-conditional model (None: the shipped raw model, see :func:`load_raw_model`); ``cfa``: see
    :func:`denoise_mosaic`.

    >>> from n3cli.raw import read_raw, develop
    >>> raw = read_raw("IMG_0001.dng")
    >>> clean, nlf = raw_denoise(raw, model="nlf.safetensors")
    >>> rgb = develop(raw, clean, no_auto_bright=True)
    """
    restorer = load_raw_model(model, device)
    info = raw_nlf(raw, nlf)
    out = denoise_mosaic(raw.mosaic, raw.pattern, (info.a, info.b), model=restorer,
                         cfa=cfa, tile=tile, overlap=overlap, progress=progress)
    return out, info
