"""Writing a (denoised) Bayer mosaic as a DNG that LibRaw/rawpy and raw developers open.

The file is a single uncompressed 16-bit CFA image in IFD0 (NewSubfileType 0) with the DNG tags for the
CFA layout, black/white levels, colour matrices, as-shot white balance and orientation, written with
tifffile. When the raw was read from a DNG, the rendering and profile tags of :data:`COPIED_TAGS` are copied from
it (baseline exposure, forward matrices, calibration, profile), so that raw developers show the denoised file as
they showed the original. Writing is atomic: a temporary file in the target folder is renamed into place.
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

#: Tags of a source DNG copied as they are (the image's own layout, levels and colour tags are written from the
#: RawImage; NoiseProfile only when given, since denoising changes it; EXIF is not carried).
COPIED_TAGS = {
    306: "DateTime", 315: "Artist", 33432: "Copyright",
    50723: "CameraCalibration1", 50724: "CameraCalibration2", 50727: "AnalogBalance", 50730: "BaselineExposure",
    50731: "BaselineNoise", 50732: "BaselineSharpness", 50734: "LinearResponseLimit", 50735: "CameraSerialNumber",
    50736: "LensInfo", 50739: "ShadowScale", 50931: "CameraCalibrationSignature",
    50932: "ProfileCalibrationSignature", 50934: "AsShotProfileName", 50936: "ProfileName",
    50937: "ProfileHueSatMapDims", 50938: "ProfileHueSatMapData1", 50939: "ProfileHueSatMapData2",
    50940: "ProfileToneCurve", 50941: "ProfileEmbedPolicy", 50942: "ProfileCopyright", 50964: "ForwardMatrix1",
    50965: "ForwardMatrix2", 50981: "ProfileLookTableDims", 50982: "ProfileLookTableData",
    51108: "ProfileLookTableEncoding", 51109: "BaselineExposureOffset", 51110: "DefaultBlackRender",
}

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


def _copied_tags(source: Path) -> list[tuple[Any, ...]]:
    """The :data:`COPIED_TAGS` of a DNG (IFD0 first, then its SubIFDs) as tifffile extra tags; [] for other files."""
    from n3cli.raw.io import tiff_pages

    if source.suffix.lower() != ".dng" or not source.is_file():
        return []
    found: dict[int, tuple[Any, ...]] = {}
    try:
        with tiff_pages(source) as pages:
            for page in pages:
                for tag in page.tags.values():
                    if tag.code not in COPIED_TAGS or tag.code in found:
                        continue
                    value = tag.value
                    if isinstance(value, bytes) and int(tag.dtype) != _ASCII:
                        value = tuple(value)
                    elif isinstance(value, np.ndarray):
                        value = tuple(value.ravel().tolist())
                    elif isinstance(value, int):
                        value = int(value)  # tifffile's enums
                    found[tag.code] = (tag.code, int(tag.dtype), int(tag.count), value, True)
    except Exception:  # noqa: BLE001 - a DNG tifffile cannot parse: the tags it could have given are left out
        return []
    return [found[code] for code in sorted(found)]


def write_dng(path: str | Path, raw: RawImage, mosaic: np.ndarray, overwrite: bool = False, *,
              noise_profile: tuple[float, float] | None = None) -> Path:
    """Write ``mosaic`` (normalised like ``raw.mosaic``) as a DNG with ``raw``'s metadata; returns the path.

    The values are denormalised with the per-pixel black level and white level, rounded and stored as uint16,
    so writing ``raw.mosaic`` reproduces the original raw integers. ``noise_profile=(a, b)`` adds a DNG
    NoiseProfile tag (variance = a·x + b). An existing file is refused unless ``overwrite``.
    """
    import tifffile

    p = Path(path)
    if p.suffix.lower() != ".dng":
        raise RawError(f"{p}: a DNG's file name must end in .dng")
    if p.exists() and not overwrite:
        raise DngExistsError(f"{p}: already exists")
    if p.is_dir():
        raise RawError(f"{p}: is a directory")
    if not p.parent.is_dir():
        raise RawError(f"{p}: the folder {p.parent} does not exist")
    if p.exists() and raw.path.exists() and p.samefile(raw.path):
        raise RawError(f"{p}: is the raw file this image was read from; write the DNG elsewhere")
    if noise_profile is not None:
        a, b = (float(v) for v in noise_profile)
        if not (np.isfinite(a) and np.isfinite(b) and a >= 0 and b >= 0):
            raise RawError(f"{p}: noise_profile must be two finite, non-negative numbers, got ({a:g}, {b:g})")
    data = denormalise(raw, mosaic)
    tags = _dng_tags(raw, noise_profile) + _copied_tags(raw.path)

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
