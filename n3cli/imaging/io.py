"""Reading and writing images for the command line: PNG, TIFF, JPEG, WebP and BMP.

Pixels are float32 (H, W, C) arrays in [0, 1] with C = 1 (gray) or 3 (RGB); float TIFF values are
kept as they are. Alpha, ICC profile and EXIF travel alongside so that an output can be written
"like" its input. Every failure raises :class:`~n3cli.errors.ImageError` with a one-line message
that names the file. Outputs are written atomically (temporary file in the same folder, then
``os.replace``).
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image as PILImage

from n3cli.atomic import new_file_mode, write_atomic
from n3cli.errors import ImageError, ImageExistsError, TooLargeError

DEFAULT_MAX_PIXELS = 200_000_000
FORMAT_OF_EXTENSION = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG",
                       ".webp": "WEBP", ".bmp": "BMP"}
IMAGE_EXTENSIONS = tuple(FORMAT_OF_EXTENSION)
BIT_DEPTHS = {"PNG": (8, 16), "TIFF": (8, 16, 32), "JPEG": (8,), "WEBP": (8,), "BMP": (8,)}
ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP"})
JPEG_QUALITY = 95

_PIL_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
_PIL_FORMAT_NAMES = {"MPO": "JPEG"}
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR_END = 33  # signature (8) + IHDR chunk: length (4), type (4), data (13), CRC (4)
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass
class Image:
    """A decoded image: float32 pixels (H, W, C) in [0, 1] plus what is needed to write it back."""

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    format: str = "PNG"
    icc_profile: bytes | None = None
    exif: bytes | None = None
    path: Path | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def is_gray(self) -> bool:
        return self.channels == 1

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _too_large(path: Path, w: int, h: int, max_pixels: int) -> TooLargeError:
    return TooLargeError(f"{path}: image is {w}x{h} = {w * h / 1e6:.4g} megapixels, over the limit of "
                         f"{max_pixels / 1e6:.4g} megapixels")


def _check_size(path: Path, w: int, h: int, max_pixels: int | None) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise _too_large(path, w, h, max_pixels)


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535)
    return a.astype(np.float32, copy=False)


def _split(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour (H, W, 1|3) and alpha (H, W) from (H, W) or (H, W, 1..4)."""
    if arr.ndim == 2:
        return arr[:, :, None], None
    c = arr.shape[2]
    if c in (1, 3):
        return arr, None
    if c in (2, 4):
        return arr[:, :, :c - 1], arr[:, :, c - 1].copy()
    raise ValueError(f"{c} channels")


# ---------------------------------------------------------------------------------------- reading


def _open_pil(path: Path, formats: tuple[str, ...]) -> PILImage.Image:
    """Open lazily (header only); our own size check replaces Pillow's decompression-bomb limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            return PILImage.open(path, formats=formats)
        except PILImage.DecompressionBombError:
            with _PIL_LIMIT_LOCK:
                saved, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
                try:
                    return PILImage.open(path, formats=formats)
                finally:
                    PILImage.MAX_IMAGE_PIXELS = saved


def _pil_array(im: PILImage.Image) -> tuple[np.ndarray, int]:
    """Decoded pixels of a Pillow image as an array in its natural dtype, and the bit depth."""
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("La", "RGBa"):
        im = im.convert(mode.upper())
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode in ("L", "RGB") and "transparency" in im.info:  # a PNG tRNS colour key: the alpha it stands for
        im = im.convert(mode + "A")
    arr = np.asarray(im)
    if mode.startswith("I;16"):
        return arr.astype(np.uint16), 16
    if mode == "I":
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError("32-bit integer samples are not supported")
        return arr.astype(np.uint16), 16
    if mode == "F":
        return arr.astype(np.float32), 32
    if arr.dtype != np.uint8:
        raise ValueError(f"unsupported image mode {mode}")
    return arr, 8


def _png_bit_depth(path: Path) -> int:
    """The bit depth field of a PNG file's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(_PNG_IHDR_END)
    if head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR" or len(head) < 25:
        raise ValueError("no PNG header")
    return head[24]


def _read_pil(path: Path, max_pixels: int | None, formats: tuple[str, ...] = _PIL_FORMATS) -> Image:
    try:
        im = _open_pil(path, formats)
    except PILImage.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image, or not a supported format "
                         "(PNG, TIFF, JPEG, WebP, BMP)") from None
    except Exception as e:  # decoders fail in many ways on bad data
        raise ImageError(f"{path}: corrupt or truncated image ({_one_line(e)})") from e
    with im:
        fmt = _PIL_FORMAT_NAMES.get(im.format or "", im.format or "?")
        w, h = im.size
        _check_size(path, w, h, max_pixels)
        icc = im.info.get("icc_profile") or None
        exif = im.info.get("exif") or None
        try:
            if fmt == "PNG" and _png_bit_depth(path) == 16:
                # Pillow drops the low byte of 16-bit colour samples: imagecodecs decodes them all
                arr, depth = imagecodecs.png_decode(path.read_bytes()), 16
            else:
                im.load()  # full decode: truncated or corrupt data fails here
                arr, depth = _pil_array(im)
            colour, alpha = _split(arr)
        except PILImage.DecompressionBombError as e:
            raise TooLargeError(f"{path}: image too large ({_one_line(e)})") from e
        except MemoryError:
            raise
        except Exception as e:  # decoders fail in many ways on bad data
            raise ImageError(f"{path}: corrupt or truncated {fmt} image ({_one_line(e)})") from e
    return Image(_to_float(colour), alpha, depth, fmt, icc, exif, path)


class _NeedsPillow(Exception):
    """The TIFF is valid but not gray or RGB (palette, CMYK, YCbCr, ...): Pillow converts it."""


def _tiff_array(page: tifffile.TiffPage) -> np.ndarray:
    photometric = int(page.photometric)
    if photometric not in (0, 1, 2):  # MINISWHITE, MINISBLACK, RGB
        raise _NeedsPillow
    data = page.asarray()  # LZW, Deflate, JPEG, ... decoded through imagecodecs
    axes = page.axes
    if "S" in axes:
        data = np.moveaxis(data, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    if axes.rstrip("S") != "YX":
        raise ValueError(f"unsupported TIFF layout {page.axes}")
    if data.dtype == np.bool_:
        data = data.astype(np.uint8) * np.uint8(255)
    if data.dtype in (np.float16, np.float64):
        data = data.astype(np.float32)
    if data.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"unsupported TIFF sample type {data.dtype}")
    if photometric == 0 and data.dtype != np.float32:
        data = np.iinfo(data.dtype).max - data
    return data


def _read_tiff(path: Path, max_pixels: int | None) -> Image:
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            _check_size(path, int(page.imagewidth), int(page.imagelength), max_pixels)
            icc = page.iccprofile
            data = _tiff_array(page)
        colour, alpha = _split(data)
    except _NeedsPillow:
        return _read_pil(path, max_pixels, ("TIFF",))
    except (ImageError, MemoryError):
        raise
    except Exception as e:  # decoders fail in many ways on bad data
        raise ImageError(f"{path}: corrupt or unsupported TIFF image ({_one_line(e)})") from e
    depth = 32 if data.dtype == np.float32 else 8 * data.dtype.itemsize
    return Image(_to_float(colour), alpha, depth, "TIFF", bytes(icc) if icc else None, None, path)


def read_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Read a PNG, TIFF, JPEG, WebP or BMP image.

    The pixel count is checked from the header before decoding; images over ``max_pixels``
    (None: no limit) are refused. Raises ImageError for anything that is not a readable image.
    """
    p = Path(path)
    head = _head(p)
    try:
        img = _read_tiff(p, max_pixels) if head[:4] in _TIFF_MAGIC else _read_pil(p, max_pixels)
    except MemoryError:  # (within a decoder, reported as corrupt data otherwise)
        w, h = image_size(p)
        raise ImageError(f"{p}: not enough memory to read {w}x{h} pixels") from None
    if img.pixels.dtype.kind == "f" and not np.isfinite(img.pixels).all():
        raise ImageError(f"{p}: the image holds NaN or infinite values")
    return img


def _head(p: Path) -> bytes:
    """The first bytes of a file that should be an image (ImageError for folders, missing or empty files)."""
    if p.is_dir():
        raise ImageError(f"{p}: is a folder, not an image")
    if p.exists() and not p.is_file():  # a pipe or device: its bytes would be gone once the header is read
        raise ImageError(f"{p}: not a regular file (a pipe?); save the image to a file first")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or _one_line(e)})") from e
    if not head:
        raise ImageError(f"{p}: empty file, not an image")
    return head


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding the pixels."""
    p = Path(path)
    try:
        if _head(p)[:4] in _TIFF_MAGIC:
            with tifffile.TiffFile(p) as tif:
                page = tif.pages.first
                return int(page.imagewidth), int(page.imagelength)
        with _open_pil(p, _PIL_FORMATS) as im:
            return im.size
    except ImageError:
        raise
    except PILImage.UnidentifiedImageError:
        raise ImageError(f"{p}: not an image, or not a supported format (PNG, TIFF, JPEG, WebP, BMP)") from None
    except Exception as e:  # decoders fail in many ways on bad data
        raise ImageError(f"{p}: corrupt or truncated image ({_one_line(e)})") from e


# ---------------------------------------------------------------------------------------- writing


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The output format implied by a file name's extension."""
    p = Path(path)
    fmt = FORMAT_OF_EXTENSION.get(p.suffix.lower())
    if fmt is None:
        raise ImageError(f"{p}: unknown image extension {p.suffix!r} "
                         f"(use one of {', '.join(IMAGE_EXTENSIONS)})")
    return fmt


def output_bit_depth(fmt: str, requested: int) -> int:
    """The deepest bit depth of ``fmt`` not above ``requested`` (8, 16 or 32 for float)."""
    if requested not in (8, 16, 32):
        raise ImageError(f"bit depth must be 8, 16 or 32, got {requested}")
    return max(d for d in BIT_DEPTHS[fmt] if d <= requested)


def _quantise(a: np.ndarray, depth: int) -> np.ndarray:
    """Float values to the sample type of ``depth``: clipped and rounded for integer outputs."""
    if depth == 32:
        return a.astype(np.float32)
    top = 255 if depth == 8 else 65535
    out = np.empty(a.shape, dtype=np.uint8 if depth == 8 else np.uint16)
    rows = max(1, (1 << 20) // max(1, a[0].size))  # float64 work in blocks of about 1M samples
    for y in range(0, a.shape[0], rows):
        block = np.clip(np.nan_to_num(a[y:y + rows].astype(np.float64), nan=0.0), 0.0, 1.0)
        out[y:y + rows] = np.floor(block * top + 0.5)
    return out


def _alpha_as(alpha: np.ndarray, depth: int) -> np.ndarray:
    """Alpha in the sample type of ``depth`` (unchanged when it already has that type)."""
    target = {8: np.uint8, 16: np.uint16, 32: np.float32}[depth]
    if alpha.dtype == target:
        return alpha
    return _quantise(_to_float(alpha), depth)


def _icc_matches(icc: bytes, channels: int) -> bool:
    space = icc[16:20]
    return space == (b"GRAY" if channels == 1 else b"RGB ")


def _encode(pixels: np.ndarray, like: Image | None, fmt: str, depth: int) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"expected pixels (H, W), (H, W, 1) or (H, W, 3), got shape {np.shape(pixels)}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = _to_float(arr) if arr.dtype in (np.uint8, np.uint16) else arr.astype(np.float32)
    out = _quantise(arr, depth)
    alpha = like.alpha if like is not None else None
    if alpha is not None and fmt in ALPHA_FORMATS and alpha.shape == out.shape[:2]:
        out = np.concatenate([out, _alpha_as(alpha, depth)[:, :, None]], axis=2)
    return out


def _pil_mode(data: np.ndarray) -> str:
    return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[data.shape[2]]


def _save_pil(f: str, data: np.ndarray, fmt: str, **options: object) -> None:
    mode = _pil_mode(data)
    im = PILImage.fromarray(data[:, :, 0] if mode == "L" else data, mode=mode)
    im.save(f, format=fmt, **{k: v for k, v in options.items() if v is not None})


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png16(data: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit PNG from imagecodecs, with iCCP and eXIf chunks (which it does not write) after IHDR."""
    png = imagecodecs.png_encode(data[:, :, 0] if data.shape[2] == 1 else data)
    if png[12:16] != b"IHDR":
        raise ValueError("unexpected PNG encoder output")
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))  # name, NUL, method 0
    if exif:
        extra += _png_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0"))
    return png[:_PNG_IHDR_END] + extra + png[_PNG_IHDR_END:]


def _write_data(f: str, data: np.ndarray, fmt: str, icc: bytes | None, exif: bytes | None,
                quality: int | None) -> None:
    if fmt == "PNG":
        if data.dtype == np.uint16:
            with open(f, "wb") as fh:
                fh.write(_encode_png16(data, icc, exif))
        else:
            _save_pil(f, data, "PNG", icc_profile=icc, exif=exif)
    elif fmt == "TIFF":
        c = data.shape[2]
        tifffile.imwrite(f, data[:, :, 0] if c == 1 else data, photometric="minisblack" if c <= 2 else "rgb",
                         planarconfig=None if c == 1 else "contig",
                         extrasamples=["unassalpha"] if c in (2, 4) else None,
                         compression="zlib", iccprofile=icc, metadata=None)
    elif fmt == "JPEG":
        _save_pil(f, data, "JPEG", quality=quality or JPEG_QUALITY,
                  subsampling=0 if quality is None else None, icc_profile=icc, exif=exif)
    elif fmt == "WEBP":
        lossless = quality is None
        _save_pil(f, data, "WEBP", lossless=lossless, quality=100 if lossless else quality,
                  exact=True if lossless else None, icc_profile=icc, exif=exif)
    else:
        _save_pil(f, data, "BMP")


def _atomic_write(path: Path, write: Callable[[str], None], overwrite: bool, what: str) -> None:
    """:func:`~n3cli.atomic.write_atomic` with the input's permissions and one-line :class:`ImageError`s."""
    try:
        write_atomic(path, write, mode=new_file_mode(path), overwrite=overwrite, fsync=True)
    except ImageError:
        raise
    except FileExistsError:
        raise ImageExistsError(f"{path}: already exists") from None
    except Exception as e:
        if isinstance(e, OSError) and (not path.parent.is_dir() or not os.access(path.parent, os.W_OK)):
            raise ImageError(f"{path}: cannot write into folder {path.parent} "
                             f"({e.strerror or _one_line(e)})") from e
        raise ImageError(f"{path}: cannot write {what} ({_one_line(e)})") from e


def write_image(path: str | os.PathLike[str], pixels: np.ndarray, like: Image | None = None,
                bit_depth: int | None = None, overwrite: bool = False,
                quality: int | None = None) -> Path:
    """Write float pixels (H, W[, 1 | 3]) in [0, 1]; the format follows the extension.

    The bit depth defaults to ``like``'s (else 8) and is lowered to what the format supports.
    ``like``'s alpha is kept for PNG, TIFF and WebP (when its shape matches), its ICC profile for
    PNG, TIFF, JPEG and WebP (when gray/RGB matches) and its EXIF for PNG, JPEG and WebP. JPEG is written at
    quality 95 without chroma subsampling and WebP lossless unless ``quality`` is given.
    Refuses to replace an existing file unless ``overwrite``; the write is atomic.
    """
    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p}: is a folder")
    fmt = format_for_path(p)
    depth = output_bit_depth(fmt, bit_depth if bit_depth is not None else (like.bit_depth if like else 8))
    if p.exists() and not overwrite:
        raise ImageExistsError(f"{p}: already exists")
    try:
        data = _encode(pixels, like, fmt, depth)
    except ValueError as e:
        raise ImageError(f"{p}: {_one_line(e)}") from e
    channels = 1 if data.shape[2] <= 2 else 3
    icc = like.icc_profile if like is not None and fmt in ("PNG", "TIFF", "JPEG", "WEBP") else None
    icc = icc if icc and _icc_matches(icc, channels) else None
    exif = like.exif if like is not None and fmt in ("PNG", "JPEG", "WEBP") else None
    _atomic_write(p, lambda f: _write_data(f, data, fmt, icc, exif, quality), overwrite,
                  f"{depth}-bit {fmt} image")
    return p


# ---------------------------------------------------------------------------------------- listing


def list_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded to their images (not recursive, sorted by name)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted((c for c in p.iterdir()
                            if c.suffix.lower() in FORMAT_OF_EXTENSION and not c.name.startswith(".")
                            and c.is_file()), key=lambda c: c.name)
            if not found:
                raise ImageError(f"{p}: folder contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif p.exists():
            found = [p]
        else:
            raise ImageError(f"{p}: no such file or folder")
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out

