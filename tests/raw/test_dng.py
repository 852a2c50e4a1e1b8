"""Writing DNGs that LibRaw reads back identically."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile

from n3cli.raw.dng import _dng_tags, write_dng
from n3cli.raw.io import RawError, RawImage, denormalise, develop, oriented, read_raw
from n3cli.raw.nlf import nlf_from_dng


def _synthetic_raw(pattern: str = "GRBG") -> RawImage:
    rng = np.random.default_rng(1)
    black = np.array([[512.0, 520.0], [508.0, 515.0]])
    white = 16383.0
    ints = rng.integers(0, 16384, size=(64, 96)).astype(np.float64)
    black_px = np.tile(black, (32, 48))
    mosaic = ((ints - black_px) / (white - black_px)).astype(np.float32)
    return RawImage(path=Path("synthetic.dng"), mosaic=mosaic, pattern=pattern, black_levels=black,
                    white_level=white, camera_wb=(2.0, 1.0, 1.5, 1.0), daylight_wb=(2.0, 1.0, 1.5, 1.0),
                    color_matrix=np.eye(3, 4), xyz_to_cam=(np.array([[0.9, -0.4, 0.0], [-0.3, 1.3, 0.2],
                                                                      [0.0, 0.15, 0.7]]),),
                    illuminants=(21,), flip=6, make="Test", model="Cam")


@pytest.mark.parametrize("pattern", ["GRBG", "BGGR"])
def test_synthetic_roundtrip(tmp_path: Path, pattern: str) -> None:
    raw = _synthetic_raw(pattern)
    path = write_dng(tmp_path / "out.dng", raw, raw.mosaic, noise_profile=(1e-3, 2e-6))
    back = read_raw(path)
    assert back.pattern == pattern
    assert np.array_equal(back.black_levels, raw.black_levels) and back.white_level == raw.white_level
    assert np.array_equal(back.mosaic, raw.mosaic)
    assert back.flip == 6 and back.orientation == 6
    assert back.camera_wb[:3] == pytest.approx((2.0, 1.0, 1.5), rel=1e-4)
    assert np.allclose(back.xyz_to_cam[0], raw.xyz_to_cam[0], atol=1e-6)
    assert nlf_from_dng(path) == pytest.approx((1e-3, 2e-6))
    # a denoised (non-integer) mosaic is rounded to the raw's integers once, then reproduced exactly
    noisy = raw.mosaic + np.float32(0.3 / 16000)
    back2 = read_raw(write_dng(tmp_path / "denoised.dng", raw, noisy))
    assert np.array_equal(denormalise(back2, back2.mosaic), denormalise(raw, noisy))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_existing_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _synthetic_raw()
    target = tmp_path / "x.dng"
    write_dng(target, raw, raw.mosaic)
    with pytest.raises(RawError, match="already exists"):
        write_dng(target, raw, raw.mosaic)
    write_dng(target, raw, raw.mosaic * 0.5, overwrite=True)
    assert read_raw(target).mosaic.max() < 0.6
    with pytest.raises(RawError, match="shape"):
        write_dng(tmp_path / "bad.dng", raw, raw.mosaic[:10])
    with pytest.raises(RawError, match="does not exist"):
        write_dng(tmp_path / "no" / "y.dng", raw, raw.mosaic)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tifffile.TiffWriter, "write", broken)
    with pytest.raises(RawError, match="disk full"):
        write_dng(tmp_path / "z.dng", raw, raw.mosaic)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dng"]


def test_rendering_tags_of_a_source_dng_are_copied(tmp_path: Path) -> None:
    raw = _synthetic_raw()
    source = tmp_path / "camera.dng"  # a camera's DNG: the layout tags plus rendering and profile tags
    extra = [(50730, 10, 1, (-12, 10), True), (50936, 2, 0, "Test profile", True),
             (50964, 10, 9, (1, 2, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
             (51041, 12, 2, (1e-3, 2e-6), True)]
    tifffile.imwrite(source, denormalise(raw, raw.mosaic), photometric=32803, compression=None, subfiletype=0,
                     metadata=None, extratags=_dng_tags(raw, None) + extra)
    camera = read_raw(source)
    out = write_dng(tmp_path / "denoised.dng", camera, camera.mosaic * 0.9)
    with tifffile.TiffFile(out) as tif:
        tags = {t.code: t.value for t in tif.pages.first.tags.values()}
    assert tags[50730] == (-12, 10) and tags[50936] == "Test profile"
    assert tags[50964] == (1, 2, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)
    assert 51041 not in tags  # the source's noise level is not the denoised file's
    assert np.array_equal(develop(read_raw(out)), develop(camera, camera.mosaic * 0.9))
    with pytest.raises(RawError, match="end in .dng"):
        write_dng(tmp_path / "x.png", camera, camera.mosaic)
    with pytest.raises(RawError, match="read from"):
        write_dng(source, camera, camera.mosaic, overwrite=True)
    with pytest.raises(RawError, match="finite, non-negative"):
        write_dng(tmp_path / "n.dng", camera, camera.mosaic, noise_profile=(float("nan"), 1e-6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.dng", "denoised.dng"]


@pytest.mark.parametrize("flip", range(8))
def test_development_applies_the_default_crop_then_the_orientation(tmp_path: Path, flip: int) -> None:
    base = dataclasses.replace(_synthetic_raw(), flip=flip, crop=(2, 4, 80, 50))
    raw = read_raw(write_dng(tmp_path / "f.dng", base, base.mosaic))
    assert raw.crop == (2, 4, 80, 50) and raw.flip == flip
    left, top, width, height = raw.crop
    sensor = develop(raw, user_flip=0)  # LibRaw's own image, neither cropped nor turned
    assert sensor.shape == (64, 96, 3)
    expected = oriented(sensor[top:top + height, left:left + width], raw.orientation)
    assert np.array_equal(develop(raw), expected)
    assert develop(raw).shape == ((50, 80, 3) if flip < 4 else (80, 50, 3))
    whole = dataclasses.replace(raw, crop=(0, 0, 96, 64))  # our turning is LibRaw's
    assert np.array_equal(develop(whole), develop(raw, crop=False))


def test_blackmagic_roundtrip(blackmagic: RawImage, blackmagic_path: Path, tmp_path: Path) -> None:
    path = write_dng(tmp_path / "bm.dng", blackmagic, blackmagic.mosaic)
    back = read_raw(path)
    assert back.pattern == "RGGB" and back.crop == blackmagic.crop
    assert np.array_equal(back.black_levels, blackmagic.black_levels)
    assert back.white_level == blackmagic.white_level
    assert np.array_equal(back.mosaic, blackmagic.mosaic)
    with rawpy.imread(str(blackmagic_path)) as a, rawpy.imread(str(path)) as b:
        assert np.array_equal(a.raw_image_visible, b.raw_image_visible)
        assert np.allclose(a.color_matrix, b.color_matrix, atol=1e-5)
    assert np.array_equal(develop(back, half_size=True), develop(blackmagic, half_size=True))
    with tifffile.TiffFile(path) as tif:  # what raw developers need to show it as the original (exposure +2.65 EV)
        tags = {t.code: t.value for t in tif.pages.first.tags.values()}
    assert tags[50730] == (265412, 100000) and 50964 in tags and 50965 in tags and 50936 in tags
