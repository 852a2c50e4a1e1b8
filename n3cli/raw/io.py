"""Reading camera raws (any Bayer format LibRaw reads), packing the mosaic, and developing it with LibRaw.

The visible Bayer mosaic is kept normalised: ``x = (value - black) / (white - black)`` with the black level of
each pixel's CFA colour, so noise level functions ``σ²(x) = a·x + b`` are in the same units everywhere
(:mod:`n3cli.imaging.noise`, DNG ``NoiseProfile``). Values below 0 (noise under the black level) are kept.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rawpy

from n3cli.errors import N3Error
from n3cli.imaging.mosaic import BAYER_PATTERNS, bayer_offsets, pack_bayer, unpack_bayer

__all__ = [
    "BAYER_PATTERNS",
    "RawError",
    "RawImage",
    "bayer_offsets",
    "denormalise",
    "develop",
    "pack_bayer",
    "read_raw",
    "unpack_bayer",
]

# LibRaw's flip code -> TIFF/EXIF Orientation (LibRaw: bit 1 = mirror x, bit 2 = mirror y, bit 4 = transpose).
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}

# sRGB (linear) from CIE XYZ, D65 white.
_SRGB_FROM_XYZ = np.array([[3.2404542, -1.5371385, -0.4985314],
                           [-0.9692660, 1.8760108, 0.0415560],
                           [0.0556434, -0.2040259, 1.0572252]])


class RawError(N3Error):
    """A raw file is missing, unreadable, not a Bayer raw, or cannot be written."""


@dataclass
class RawImage:
    """A Bayer raw: the normalised visible mosaic plus what is needed to write or develop it again.

    ``black_levels`` is the 2x2 black level of the CFA positions (same layout as ``pattern``);
    ``camera_wb``/``daylight_wb`` are LibRaw multipliers in its colour order R, G, B, G2;
    ``color_matrix`` is LibRaw's 3x4 camera-to-sRGB matrix; ``xyz_to_cam`` the DNG-style XYZ-to-camera
    matrices (ColorMatrix1/2) with their EXIF ``illuminants``; ``flip`` is LibRaw's orientation code.
    The file at ``path`` is the handle used by :func:`develop` (it is reopened each time).
    """

    path: Path
    mosaic: np.ndarray
    pattern: str
    black_levels: np.ndarray
    white_level: float
    camera_wb: tuple[float, float, float, float]
    daylight_wb: tuple[float, float, float, float]
    color_matrix: np.ndarray
    xyz_to_cam: tuple[np.ndarray, ...] = ()
    illuminants: tuple[int, ...] = ()
    flip: int = 0
    crop: tuple[int, int, int, int] | None = None
    make: str | None = None
    model: str | None = None
    unique_camera_model: str | None = None
    raw_colors: np.ndarray = field(default_factory=lambda: np.array([[0, 1], [3, 2]]))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mosaic.shape[0]), int(self.mosaic.shape[1]))

    @property
    def orientation(self) -> int:
        """The TIFF/EXIF Orientation value (1 = as stored) equivalent to ``flip``."""
        return _FLIP_TO_ORIENTATION.get(self.flip, 1)

    def black_map(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Per-pixel black levels (float64) for a mosaic of ``shape`` (default: this image's)."""
        h, w = shape or self.shape
        return np.tile(self.black_levels, ((h + 1) // 2, (w + 1) // 2))[:h, :w]


# ----------------------------------------------------------------------------------------------- reading


@contextmanager
def _libraw_messages() -> Iterator[list[str]]:
    """Catch what LibRaw prints straight to the process's stderr (e.g. 'Unexpected end of file'): the list
    yielded holds those lines once the block ends, so errors can say them in one line of their own."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (embedded use): nothing to catch
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [ln.strip() for ln in sink.read().decode(errors="replace").splitlines() if ln.strip()]


@contextmanager
def open_rawpy(path: str | Path) -> Iterator[Any]:
    """Open a raw with rawpy (LibRaw), mapping every failure to a one-line :class:`RawError`."""
    p = Path(path)
    if not p.exists():
        raise RawError(f"{p}: no such file")
    if not p.is_file():
        raise RawError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise RawError(f"{p}: empty file")
    with _libraw_messages() as said:
        try:
            with _open_rawpy(p) as rp:
                yield rp
        except RawError as exc:
            note = f" (LibRaw: {said[-1].removeprefix(f'{p}: ')})" if said else ""
            raise RawError(f"{exc}{note}") from None


@contextmanager
def _open_rawpy(p: Path) -> Iterator[Any]:
    try:
        rp = rawpy.imread(str(p))
    except rawpy.LibRawFileUnsupportedError:
        raise RawError(f"{p}: not a raw image LibRaw can read (unsupported, not a camera raw, or too small)"
                       ) from None
    except (rawpy.LibRawError, rawpy.NotSupportedError) as e:
        raise RawError(f"{p}: {_decode_failure(e)}") from None
    except OSError as e:
        raise RawError(f"{p}: cannot read the file ({_one_line(e)})") from None
    try:
        yield rp
    except (rawpy.LibRawError, rawpy.NotSupportedError) as e:  # decoding is lazy: truncated data fails here
        raise RawError(f"{p}: {_decode_failure(e)}") from None
    finally:
        rp.close()


def _decode_failure(e: BaseException) -> str:
    """What a LibRaw error while opening or decoding means for the user."""
    if isinstance(e, rawpy.LibRawIOError):  # LibRaw's reads ran past the data: a cut file, or not a raw at all
        return f"cannot decode the raw data: truncated, or not a camera raw (LibRaw: {_one_line(e)})"
    return f"cannot decode the raw data ({type(e).__name__}: {_one_line(e)})"


def _one_line(e: BaseException) -> str:
    """The error's text on one line; LibRaw's messages come as bytes (rawpy gives b'...')."""
    arg = e.args[0] if len(e.args) == 1 else None
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(e)
    return " ".join(text.split()) or type(e).__name__


def _pattern_of(rp: Any, p: Path) -> tuple[str, np.ndarray]:
    """The CFA pattern string of the visible top-left 2x2 and LibRaw's colour indices there."""
    if rp.raw_type != rawpy.RawType.Flat or rp.raw_pattern is None:
        raise RawError(f"{p}: not a Bayer raw (linear/demosaiced or multi-layer data: Foveon, linear DNG)")
    if tuple(rp.raw_pattern.shape) != (2, 2):
        shape = "x".join(map(str, rp.raw_pattern.shape))
        raise RawError(f"{p}: not a Bayer raw (CFA repeats every {shape} pixels, e.g. X-Trans)")
    if rp.num_colors != 3:
        raise RawError(f"{p}: not an RGB Bayer raw ({rp.num_colors} colours)")
    vis = rp.raw_colors_visible
    if vis.shape[0] < 2 or vis.shape[1] < 2:
        raise RawError(f"{p}: visible area too small ({vis.shape[0]}x{vis.shape[1]})")
    idx = np.asarray(vis[:2, :2], dtype=np.int64)
    desc = rp.color_desc.decode("ascii", "replace")
    pattern = "".join(desc[i] for i in idx.ravel())
    if pattern not in BAYER_PATTERNS:
        raise RawError(f"{p}: unsupported CFA pattern {pattern!r} (colours {desc!r}), not a Bayer layout")
    h, w = vis.shape
    if not np.array_equal(vis, np.tile(idx, ((h + 1) // 2, (w + 1) // 2))[:h, :w]):
        raise RawError(f"{p}: the CFA colours do not repeat every 2x2 pixels; not a plain Bayer raw")
    return pattern, idx


@contextmanager
def tiff_pages(path: Path) -> Iterator[list[Any]]:
    """IFD0 and its SubIFDs of a TIFF-based file (DNG, NEF, CR2, ...), with tifffile's logging and warnings
    muted. Whatever tifffile raises for other files propagates to the caller."""
    import tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                yield [page, *(page.pages or ())]
    finally:
        logger.setLevel(level)


def _tiff_tags(path: Path) -> dict[int, Any]:
    """Tags of IFD0 and its SubIFDs (IFD0 first) when the raw is TIFF-based (DNG, NEF, CR2, ...), else {}."""
    tags: dict[int, Any] = {}
    try:
        with tiff_pages(path) as pages:
            for pg in pages:
                for tag in pg.tags.values():
                    tags.setdefault(tag.code, tag.value)
    except Exception:  # noqa: BLE001 - not TIFF-based, or a layout tifffile cannot parse: no extra metadata
        return {}
    return tags


def _rationals(v: Any, n: int) -> np.ndarray | None:
    """A TIFF (S)RATIONAL tag of ``n`` values (tifffile gives flat num/den pairs) as float64, else None."""
    a = np.asarray(v, dtype=np.float64).ravel()
    if a.size == 2 * n and np.all(a[1::2] != 0):
        return a[0::2] / a[1::2]
    return a if a.size == n else None


def _ascii(v: Any) -> str | None:
    if isinstance(v, bytes):
        v = v.decode("latin-1", "replace")
    if isinstance(v, str):
        v = v.strip("\x00 ")
        return v or None
    return None


def _color_matrices(tags: dict[int, Any], rp: Any) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
    """XYZ-to-camera matrices: the DNG ColorMatrix1/2 tags, else LibRaw's, else derived from rgb_cam."""
    mats: list[np.ndarray] = []
    ills: list[int] = []
    for mtag, itag in ((50721, 50778), (50722, 50779)):
        if mtag in tags:
            m = _rationals(tags[mtag], 9)
            if m is not None and np.all(np.isfinite(m)) and np.any(m != 0):
                mats.append(m.reshape(3, 3))
                ills.append(int(tags.get(itag, 21)))
    if mats:
        return tuple(mats), tuple(ills)
    m = np.asarray(rp.rgb_xyz_matrix, dtype=np.float64)[:3]
    if np.any(m != 0):
        return (m,), (21,)
    rgb_cam = np.asarray(rp.color_matrix, dtype=np.float64)[:, :3]
    if np.any(rgb_cam != 0) and abs(np.linalg.det(rgb_cam)) > 1e-9:
        return (np.linalg.inv(rgb_cam) @ _SRGB_FROM_XYZ,), (21,)
    return (), ()


def read_raw(path: str | Path) -> RawImage:
    """Read a Bayer camera raw with LibRaw into a :class:`RawImage` (mosaic normalised to [0, 1])."""
    p = Path(path)
    with open_rawpy(p) as rp:
        pattern, idx = _pattern_of(rp, p)
        raw = np.asarray(rp.raw_image_visible)
        black_ch = np.asarray(rp.black_level_per_channel, dtype=np.float64)
        black = black_ch[idx]
        white = float(rp.white_level)
        if white <= black.max():
            raise RawError(f"{p}: white level {white:g} not above the black levels {black.ravel().tolist()}")
        camera_wb = tuple(float(v) for v in rp.camera_whitebalance)
        daylight_wb = tuple(float(v) for v in rp.daylight_whitebalance)
        color_matrix = np.array(rp.color_matrix, dtype=np.float64)
        sizes = rp.sizes
        flip = int(sizes.flip)
        crop = None
        cw, ch = int(getattr(sizes, "crop_width", 0)), int(getattr(sizes, "crop_height", 0))
        if cw > 0 and ch > 0:
            cl, ct = int(sizes.crop_left_margin), int(sizes.crop_top_margin)
            if cl + cw <= raw.shape[1] and ct + ch <= raw.shape[0]:
                crop = (cl, ct, cw, ch)
        tags = _tiff_tags(p)
        xyz_to_cam, illuminants = _color_matrices(tags, rp)
        if not xyz_to_cam:  # LibRaw reads e.g. a plain 16-bit gray TIFF as an RGGB mosaic with no colour at all
            raise RawError(f"{p}: no colour matrix, so not a camera raw that can be developed (a plain or "
                           "monochrome TIFF?)")
        h, w = raw.shape
        black_px = np.tile(black.astype(np.float32), ((h + 1) // 2, (w + 1) // 2))[:h, :w]
        scale = (white - black_px).astype(np.float32)
        mosaic = (raw.astype(np.float32) - black_px) / scale
    return RawImage(
        path=p, mosaic=mosaic, pattern=pattern, black_levels=black, white_level=white,
        camera_wb=camera_wb,  # type: ignore[arg-type]
        daylight_wb=daylight_wb,  # type: ignore[arg-type]
        color_matrix=color_matrix, xyz_to_cam=xyz_to_cam, illuminants=illuminants, flip=flip, crop=crop,
        make=_ascii(tags.get(271)), model=_ascii(tags.get(272)), unique_camera_model=_ascii(tags.get(50708)),
        raw_colors=idx,
    )


def denormalise(raw: RawImage, mosaic: np.ndarray) -> np.ndarray:
    """Back to raw integers: ``round(x·(white - black) + black)`` per pixel, clipped to [0, 65535], uint16."""
    m = np.asarray(mosaic)
    if m.shape != raw.shape:
        raise RawError(f"{raw.path}: mosaic shape {m.shape} does not match the raw's {raw.shape}")
    black = raw.black_map()
    vals = m.astype(np.float64) * (raw.white_level - black) + black
    if not np.all(np.isfinite(vals)):
        raise RawError(f"{raw.path}: the mosaic holds NaN or infinite values")
    return np.clip(np.rint(vals), 0, 65535).astype(np.uint16)


# ----------------------------------------------------------------------------------------------- developing

#: Most threads LibRaw's development may use: in this process its OpenMP team follows torch's thread count, and
#: LibRaw's memory pool overflows beyond about 256 threads ("Libraw internal mempool overflowed").
LIBRAW_MAX_THREADS = 64


@contextmanager
def _threads_at_most(n: int) -> Iterator[None]:
    """torch's (and so LibRaw's) intra-op thread count capped at ``n`` inside the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    if before > n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before > n:
            torch.set_num_threads(before)



def develop(raw: RawImage, mosaic: np.ndarray | None = None, *, bits: int = 8, crop: bool = True,
            **settings: Any) -> np.ndarray:
    """Develop with LibRaw: HxWx3 uint8 (``bits=8``) or uint16 (``bits=16``) RGB.

    A given normalised ``mosaic`` (e.g. denoised) replaces the raw data first (denormalised with the per-pixel
    black level and the white level, rounded, clipped to the integer range); ``None`` develops the raw as is.
    Defaults: camera white balance, LibRaw's default demosaic (AHD), orientation from the file, and the raw's
    default crop (``raw.crop``, the DNG DefaultCrop: the frame raw developers show; LibRaw itself keeps the sensor's
    margins) unless ``crop=False``. ``settings`` are rawpy ``postprocess`` parameters (e.g. ``half_size=True``,
    ``demosaic_algorithm="DHT"``); with ``half_size`` or ``user_flip`` the image is not cropped.
    """
    if bits not in (8, 16):
        raise RawError(f"{raw.path}: output bits must be 8 or 16, got {bits}")
    params: dict[str, Any] = {"use_camera_wb": True, "output_bps": bits}
    params.update(settings)
    cropping = crop and raw.crop is not None and not params.get("half_size") and "user_flip" not in params
    if cropping:
        params["user_flip"] = 0  # crop in the sensor's own orientation, then turn as LibRaw would have
    algo = params.get("demosaic_algorithm")
    if isinstance(algo, str):
        try:
            params["demosaic_algorithm"] = rawpy.DemosaicAlgorithm[algo.upper()]
        except KeyError:
            names = ", ".join(a.name for a in rawpy.DemosaicAlgorithm)
            raise RawError(f"{raw.path}: unknown demosaic algorithm {algo!r} (one of {names})") from None
    ints = None if mosaic is None else denormalise(raw, mosaic)
    with open_rawpy(raw.path) as rp, _threads_at_most(LIBRAW_MAX_THREADS):
        vis = rp.raw_image_visible
        if tuple(vis.shape) != raw.shape:
            raise RawError(f"{raw.path}: the file changed since it was read (visible size {vis.shape})")
        if ints is not None:
            vis[...] = ints
        try:
            rgb = np.asarray(rp.postprocess(**params))
        except (rawpy.LibRawError, rawpy.NotSupportedError) as e:
            raise RawError(f"{raw.path}: LibRaw processing failed ({_one_line(e)})") from None
        except (TypeError, ValueError) as e:
            raise RawError(f"{raw.path}: bad development settings ({_one_line(e)})") from None
    if not cropping:
        return rgb
    if rgb.shape[:2] == raw.shape and raw.crop is not None:  # one developed pixel per sensor pixel
        left, top, width, height = raw.crop
        rgb = rgb[top:top + height, left:left + width]
    return np.ascontiguousarray(oriented(rgb, raw.orientation))


def oriented(img: np.ndarray, orientation: int) -> np.ndarray:
    """An image stored as the sensor saw it, turned for display by its TIFF/EXIF ``orientation`` (1-8)."""
    if orientation in (5, 6, 7, 8):  # the quarter turns and transpositions
        img = {5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
               8: lambda a: np.rot90(a, 1)}[orientation](img)
    elif orientation in (2, 3, 4):
        img = {2: img[:, ::-1], 3: img[::-1, ::-1], 4: img[::-1]}[orientation]
    return img
