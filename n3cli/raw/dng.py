"""Writing a (denoised) Bayer mosaic as a DNG that LibRaw/rawpy and raw developers open.

The file is a single uncompressed 16-bit CFA image in IFD0 (NewSubfileType 0) with the DNG tags for the
CFA layout, black/white levels, colour matrices, as-shot white balance and orientation, written with
tifffile. Writing is atomic: a temporary file in the target folder is renamed into place.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from n3cli.atomic import write_atomic
from n3cli.errors import OutputExistsError
from n3cli.raw.io import RawError, RawImage, denormalise


class DngExistsError(RawError, OutputExistsError):
    """The DNG to write exists and replacing it was not asked for (``overwrite=False``)."""


__all__ = ["write_dng"]

# TIFF field types.
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL, _DOUBLE = 1, 2, 3, 4, 5, 10, 12
_CFA_CODE = {"R": 0, "G": 1, "B": 2}


def _rational_pairs(values: Any, signed: bool) -> tuple[int, ...]:
    """Flat (numerator, denominator) pairs for TIFF (S)RATIONAL tags."""
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        f = Fraction(float(v)).limit_denominator(1_000_000)
        num, den = f.numerator, f.denominator
        limit = 2**31 - 1 if signed else 2**32 - 1
        while abs(num) > limit or den > 2**32 - 1:
            num, den = round(num / 2), max(den // 2, 1)
        out += [num, den]
    return tuple(out)


def _ascii_tag(code: int, text: str) -> tuple[int, int, int, str, bool]:
    return (code, _ASCII, 0, text.encode("ascii", "replace").decode("ascii"), True)


def _dng_tags(raw: RawImage, noise_profile: tuple[float, float] | None) -> list[tuple[Any, ...]]:
    tags: list[tuple[Any, ...]] = []
    if raw.make:
        tags.append(_ascii_tag(271, raw.make))
    if raw.model:
        tags.append(_ascii_tag(272, raw.model))
    tags.append((274, _SHORT, 1, raw.orientation, True))
    tags.append((33421, _SHORT, 2, (2, 2), True))  # CFARepeatPatternDim
    tags.append((33422, _BYTE, 4, tuple(_CFA_CODE[c] for c in raw.pattern), True))  # CFAPattern
    tags.append((50706, _BYTE, 4, (1, 4, 0, 0), True))  # DNGVersion
    tags.append((50707, _BYTE, 4, (1, 3, 0, 0), True))  # DNGBackwardVersion
    unique = raw.unique_camera_model or " ".join(s for s in (raw.make, raw.model) if s) or "n3 raw"
    tags.append(_ascii_tag(50708, unique))  # UniqueCameraModel
    tags.append((50710, _BYTE, 3, (0, 1, 2), True))  # CFAPlaneColor
    tags.append((50711, _SHORT, 1, 1, True))  # CFALayout: rectangular
    tags.append((50713, _SHORT, 2, (2, 2), True))  # BlackLevelRepeatDim
    black = np.asarray(raw.black_levels, dtype=np.float64).ravel()
    if np.all(black == np.round(black)) and np.all(black >= 0):
        tags.append((50714, _LONG, 4, tuple(int(v) for v in black), True))
    else:
        tags.append((50714, _RATIONAL, 4, _rational_pairs(np.maximum(black, 0), signed=False), True))
    tags.append((50717, _LONG, 1, int(round(raw.white_level)), True))  # WhiteLevel
    for i, (mat, ill) in enumerate(zip(raw.xyz_to_cam[:2], raw.illuminants[:2], strict=False)):
        tags.append((50721 + i, _SRATIONAL, 9, _rational_pairs(mat, signed=True), True))  # ColorMatrix1/2
        tags.append((50778 + i, _SHORT, 1, int(ill), True))  # CalibrationIlluminant1/2
    wb = np.asarray(raw.camera_wb[:3], dtype=np.float64)
    if np.all(np.isfinite(wb)) and np.all(wb > 0):
        tags.append((50728, _RATIONAL, 3, _rational_pairs(wb[1] / wb, signed=False), True))  # AsShotNeutral
    if raw.crop is not None:
        left, top, width, height = raw.crop
        tags.append((50719, _LONG, 2, (left, top), True))  # DefaultCropOrigin
        tags.append((50720, _LONG, 2, (width, height), True))  # DefaultCropSize
    if noise_profile is not None:
        s, o = (float(v) for v in noise_profile)
        tags.append((51041, _DOUBLE, 2, (s, o), True))  # NoiseProfile
    return tags


def write_dng(path: str | Path, raw: RawImage, mosaic: np.ndarray, overwrite: bool = False, *,
              noise_profile: tuple[float, float] | None = None) -> Path:
    """Write ``mosaic`` (normalised like ``raw.mosaic``) as a DNG with ``raw``'s metadata; returns the path.

    The values are denormalised with the per-pixel black level and white level, rounded and stored as uint16,
    so writing ``raw.mosaic`` reproduces the original raw integers. ``noise_profile=(a, b)`` adds a DNG
    NoiseProfile tag (variance = a·x + b). An existing file is refused unless ``overwrite``.
    """
    import tifffile

    p = Path(path)
    if p.exists() and not overwrite:
        raise DngExistsError(f"{p}: already exists")
    if p.is_dir():
        raise RawError(f"{p}: is a directory")
    if not p.parent.is_dir():
        raise RawError(f"{p}: the folder {p.parent} does not exist")
    data = denormalise(raw, mosaic)
    tags = _dng_tags(raw, noise_profile)

    def write(tmp: str) -> None:
        with tifffile.TiffWriter(tmp) as tif:
            tif.write(data, photometric=32803, compression=None, subfiletype=0, software="n3",
                      metadata=None, extratags=tags)

    try:
        write_atomic(p, write, overwrite=overwrite)
    except FileExistsError:
        raise DngExistsError(f"{p}: already exists") from None
    except (OSError, ValueError, TypeError) as e:
        raise RawError(f"{p}: cannot write the DNG ({' '.join(str(e).split())})") from None
    return p
