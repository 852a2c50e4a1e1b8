"""Reading raws, packing the Bayer mosaic, developing with LibRaw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy
import torch

from n3cli.errors import N3Error
from n3cli.raw.io import (
    BAYER_PATTERNS,
    RawError,
    RawImage,
    bayer_offsets,
    denormalise,
    develop,
    pack_bayer,
    read_raw,
    unpack_bayer,
)


def test_read_blackmagic(blackmagic: RawImage, blackmagic_path: Path) -> None:
    r = blackmagic
    assert r.pattern == "RGGB"
    assert r.mosaic.shape == (2176, 4128) and r.mosaic.dtype == np.float32
    assert np.array_equal(r.black_levels, np.full((2, 2), 512.0))
    assert r.white_level == 65535.0
    assert r.orientation == 1 and r.crop == (16, 8, 4096, 2160)
    assert r.camera_wb[1] == pytest.approx(1.0) and r.camera_wb[0] > 1.0
    assert len(r.xyz_to_cam) == 2 and r.illuminants == (17, 21)
    assert r.unique_camera_model == "Blackmagic Pocket Cinema Camera 4K"
    assert float(r.mosaic.min()) == pytest.approx(-512 / 65023) and float(r.mosaic.max()) <= 1.0
    with rawpy.imread(str(blackmagic_path)) as rp:
        assert np.array_equal(denormalise(r, r.mosaic), rp.raw_image_visible)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("shape", [(6, 8), (7, 9)])
def test_pack_unpack_roundtrip(pattern: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    m = rng.random(shape, dtype=np.float32)
    packed = pack_bayer(m, pattern)
    assert packed.shape == (4, shape[0] // 2, shape[1] // 2)
    # fixed channel order R, G1, G2, B whatever the layout
    for c, colour in zip(range(4), "RGGB", strict=True):
        dy, dx = bayer_offsets(pattern)[c]
        assert pattern[2 * dy + dx] == colour
        assert np.array_equal(packed[c], m[dy:shape[0] // 2 * 2:2, dx:shape[1] // 2 * 2:2])
    back = unpack_bayer(packed, pattern, shape)
    even = (slice(0, shape[0] // 2 * 2), slice(0, shape[1] // 2 * 2))
    assert back.shape == shape and np.array_equal(back[even], m[even])
    if shape[0] % 2:  # the padded last row repeats the row two above (same CFA colours)
        assert np.array_equal(back[-1], back[-3])
    t = torch.from_numpy(m)[None]
    assert torch.equal(unpack_bayer(pack_bayer(t, pattern), pattern, shape)[0][even], t[0][even])


def test_pack_greens_follow_rows() -> None:
    assert bayer_offsets("RGGB") == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert bayer_offsets("BGGR") == [(1, 1), (1, 0), (0, 1), (0, 0)]
    assert bayer_offsets("GRBG") == [(0, 1), (0, 0), (1, 1), (1, 0)]
    with pytest.raises(ValueError):
        bayer_offsets("RGBG")


def test_develop(blackmagic: RawImage) -> None:
    img = develop(blackmagic, half_size=True)
    assert img.shape == (1088, 2064, 3) and img.dtype == np.uint8
    same = develop(blackmagic, blackmagic.mosaic, half_size=True)
    assert np.array_equal(img, same)
    darker = develop(blackmagic, blackmagic.mosaic * 0.25, bits=16, half_size=True, no_auto_bright=True,
                     demosaic_algorithm="LINEAR")
    assert darker.shape == (1088, 2064, 3) and darker.dtype == np.uint16
    assert float(darker.mean()) / 65535 < float(img.mean()) / 255
    with pytest.raises(RawError, match="bits"):
        develop(blackmagic, bits=12)
    with pytest.raises(RawError, match="shape"):
        develop(blackmagic, blackmagic.mosaic[:-2])


def test_non_raw_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a raw\n")
    with pytest.raises(RawError, match="notes.txt") as info:
        read_raw(text)
    assert "\n" not in str(info.value) and isinstance(info.value, N3Error)
    with pytest.raises(RawError, match="no such file"):
        read_raw(tmp_path / "missing.dng")
    with pytest.raises(RawError, match="not a regular file"):
        read_raw(tmp_path)


def test_refuses_linear_dng(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "linear.dng"
    rgb = np.full((32, 48, 3), 1000, dtype=np.uint16)  # LibRaw rejects much smaller images
    identity = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)
    tags = [(50706, 1, 4, (1, 4, 0, 0), True), (50708, 2, 0, "Linear", True), (50717, 4, 1, 65535, True),
            (50721, 10, 9, identity, True), (50778, 3, 1, 21, True)]
    tifffile.imwrite(path, rgb, photometric=34892, extratags=tags, metadata=None)  # LinearRaw
    with pytest.raises(RawError, match="not a Bayer raw"):
        read_raw(path)
