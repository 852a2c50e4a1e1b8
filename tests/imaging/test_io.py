"""Round trips, metadata and error cases of n3cli.imaging.io, on tiny synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import ImageCms

from n3cli.errors import ImageError, ImageExistsError, N3Error, TooLargeError
from n3cli.imaging.io import (
    IMAGE_EXTENSIONS,
    Image,
    list_images,
    output_bit_depth,
    read_image,
    write_image,
)

RNG = np.random.default_rng(1234)


def smooth(h: int = 19, w: int = 23, c: int = 3) -> np.ndarray:
    """A smooth float image in [0, 1] (so PNG filters of every type get used), plus mild noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = [0.5 + 0.4 * np.sin(xx / 3 + k) * np.cos(yy / 4 - k) for k in range(c)]
    img = np.stack(base, axis=-1) + RNG.uniform(-0.02, 0.02, (h, w, c))
    return np.clip(img, 0, 1).astype(np.float32)


def icc_srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes() -> bytes:
    exif = PILImage.Exif()
    exif[0x010F] = "n3 test camera"  # Make
    exif[0x0131] = "n3"  # Software
    return exif.tobytes()


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip(tmp_path: Path, depth: int, channels: int) -> None:
    x = smooth(c=channels)
    out = write_image(tmp_path / "a.png", x, bit_depth=depth)
    im = read_image(out)
    assert (im.format, im.bit_depth, im.pixels.shape, im.pixels.dtype) == ("PNG", depth, x.shape, np.float32)
    assert im.is_gray == (channels == 1) and im.alpha is None
    top = 2**depth - 1
    np.testing.assert_array_equal(np.round(im.pixels * top), np.floor(x.astype(np.float64) * top + 0.5))
    assert out.read_bytes()[24] == depth  # IHDR bit depth: really 16-bit, also for RGB


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_alpha_passes_through_untouched(tmp_path: Path, depth: int, channels: int) -> None:
    dtype = np.uint8 if depth == 8 else np.uint16
    alpha = RNG.integers(0, 2**depth, (19, 23)).astype(dtype)
    rgba = np.concatenate([(smooth(c=channels) * (2**depth - 1)).astype(dtype), alpha[:, :, None]], axis=2)
    src = tmp_path / "src.png"
    src.write_bytes(imagecodecs.png_encode(rgba))
    im = read_image(src)
    assert im.bit_depth == depth and im.channels == channels
    assert im.alpha is not None and im.alpha.dtype == dtype
    np.testing.assert_array_equal(im.alpha, alpha)
    np.testing.assert_allclose(im.pixels, rgba[:, :, :channels] / (2**depth - 1), atol=1e-6)
    out = read_image(write_image(tmp_path / "out.png", im.pixels, like=im))
    np.testing.assert_array_equal(out.alpha, alpha)
    np.testing.assert_array_equal(out.pixels, im.pixels)
    tif = read_image(write_image(tmp_path / "out.tif", im.pixels, like=im))
    np.testing.assert_array_equal(tif.alpha, alpha)
    jpg = read_image(write_image(tmp_path / "out.jpg", im.pixels, like=im))
    assert jpg.alpha is None and jpg.bit_depth == 8


def test_pil_written_rgba_and_palette(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, (9, 11, 4)).astype(np.uint8)
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    im = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(im.alpha, rgba[:, :, 3])
    np.testing.assert_array_equal(np.round(im.pixels * 255), rgba[:, :, :3])
    pal = PILImage.fromarray(rgba[:, :, :3], "RGB").convert("P", palette=PILImage.Palette.ADAPTIVE)
    pal.save(tmp_path / "pal.png")
    im = read_image(tmp_path / "pal.png")
    assert im.channels == 3 and im.alpha is None and im.bit_depth == 8
    np.testing.assert_array_equal(np.round(im.pixels * 255), np.asarray(pal.convert("RGB")))


@pytest.mark.parametrize("name", ["a.png", "a.tif"])
def test_out_of_memory_while_reading_says_so(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not "corrupt or truncated": the float conversion (4 bytes a sample) is where a large image runs out."""
    path = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(path, np.zeros((20, 30), np.uint8))
    else:
        PILImage.fromarray(np.zeros((20, 30), np.uint8)).save(path)

    def out_of_memory(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr("n3cli.imaging.io._to_float", out_of_memory)
    with pytest.raises(ImageError, match="not enough memory to read 30x20 pixels"):
        read_image(path)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_transparency_key_becomes_alpha(tmp_path: Path, mode: str) -> None:
    """A tRNS colour key (8-bit gray or RGB) marks its pixels transparent: read as an alpha channel, written back."""
    gray = RNG.integers(0, 256, (9, 11)).astype(np.uint8)
    gray[2, 3] = 7
    arr = gray if mode == "L" else np.stack([gray] * 3, axis=-1)
    PILImage.fromarray(arr, mode).save(tmp_path / "key.png", transparency=7 if mode == "L" else (7, 7, 7))
    im = read_image(tmp_path / "key.png")
    assert im.alpha is not None and im.alpha[2, 3] == 0 and (im.alpha[gray != 7] == 255).all()
    np.testing.assert_array_equal(np.round(im.pixels[..., 0] * 255), gray)
    back = read_image(write_image(tmp_path / "out.png", im.pixels, like=im))
    np.testing.assert_array_equal(back.alpha, im.alpha)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_bit_exact(tmp_path: Path, channels: int) -> None:
    a = (smooth(31, 45, channels) * 65535).astype(np.uint16)
    a[::7] = RNG.integers(0, 65536, a[::7].shape).astype(np.uint16)  # low bytes matter too
    src = tmp_path / "src.png"
    src.write_bytes(imagecodecs.png_encode(a))
    im = read_image(src)
    assert im.bit_depth == 16 and im.channels == (1 if channels <= 2 else 3)
    back = np.round(im.pixels * 65535).astype(np.uint16)
    if im.alpha is not None:
        back = np.concatenate([back, im.alpha[:, :, None]], axis=2)
    np.testing.assert_array_equal(back, a.reshape(back.shape))
    out = write_image(tmp_path / "out.png", im.pixels, like=im)
    assert out.read_bytes()[24] == 16
    np.testing.assert_array_equal(imagecodecs.png_decode(out.read_bytes()).reshape(a.shape), a)


def test_16bit_png_metadata_chunks_are_valid(tmp_path: Path) -> None:
    icc = icc_srgb()
    like = Image(smooth(), icc_profile=icc, exif=exif_bytes(), bit_depth=16)
    out = write_image(tmp_path / "m.png", like.pixels, like=like)
    data = out.read_bytes()
    assert data.index(b"iCCP") < data.index(b"IDAT") and data.index(b"eXIf") < data.index(b"IDAT")
    with PILImage.open(out) as im:  # Pillow checks every chunk's CRC while reading
        im.verify()
    decoded = imagecodecs.png_decode(data)  # and libpng accepts the file
    np.testing.assert_array_equal(decoded, np.floor(like.pixels.astype(np.float64) * 65535 + 0.5))


@pytest.mark.parametrize("depth", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_tiff_round_trip(tmp_path: Path, depth: int, channels: int) -> None:
    x = smooth(c=channels)
    if depth == 32:
        x = x * 3 - 1  # float TIFF values are kept as they are, not clipped
    im = read_image(write_image(tmp_path / "a.tiff", x, bit_depth=depth))
    assert (im.format, im.bit_depth, im.pixels.shape) == ("TIFF", depth, x.shape)
    if depth == 32:
        np.testing.assert_array_equal(im.pixels, x)
    else:
        top = 2**depth - 1
        expected = np.floor(np.clip(x.astype(np.float64), 0, 1) * top + 0.5)
        np.testing.assert_array_equal(np.round(im.pixels * top), expected)


def test_tiff_float_alpha_and_planar(tmp_path: Path) -> None:
    planar = RNG.integers(0, 65536, (3, 8, 10)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    im = read_image(tmp_path / "planar.tif")
    np.testing.assert_array_equal(np.round(im.pixels * 65535), planar.transpose(1, 2, 0))
    alpha = RNG.random((8, 10)).astype(np.float32)
    im32 = Image(RNG.random((8, 10, 3)).astype(np.float32), alpha=alpha, bit_depth=32, format="TIFF")
    back = read_image(write_image(tmp_path / "f.tif", im32.pixels, like=im32))
    np.testing.assert_array_equal(back.alpha, alpha)
    np.testing.assert_array_equal(back.pixels, im32.pixels)


def test_pillow_written_lzw_tiff(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (9, 12, 3)).astype(np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    im = read_image(tmp_path / "lzw.tif")
    assert (im.format, im.bit_depth) == ("TIFF", 8)
    np.testing.assert_array_equal(np.round(im.pixels * 255), rgb)
    gray = RNG.integers(0, 65536, (9, 12)).astype(np.uint16)
    PILImage.fromarray(gray).save(tmp_path / "lzw16.tif", compression="tiff_lzw")
    im = read_image(tmp_path / "lzw16.tif")
    assert im.bit_depth == 16 and im.is_gray
    np.testing.assert_array_equal(np.round(im.pixels[:, :, 0] * 65535), gray)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "jpeg"])
def test_compressed_tiff_read_through_imagecodecs(tmp_path: Path, compression: str) -> None:
    if compression == "jpeg":  # 8-bit only, lossy
        rgb = (smooth(16, 24) * 255).astype(np.uint8)
        tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", compression="jpeg")
        im = read_image(tmp_path / "c.tif")
        assert (im.bit_depth, im.channels) == (8, 3)
        assert np.abs(im.pixels * 255 - rgb).max() < 24
        return
    rgb = RNG.integers(0, 65536, (13, 17, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", compression=compression)
    im = read_image(tmp_path / "c.tif")
    assert (im.format, im.bit_depth, im.channels) == ("TIFF", 16, 3)
    np.testing.assert_array_equal(np.round(im.pixels * 65535), rgb)
    back = read_image(write_image(tmp_path / "back.tif", im.pixels, like=im))
    np.testing.assert_array_equal(back.pixels, im.pixels)


@pytest.mark.parametrize("ext,fmt,tol", [(".jpg", "JPEG", 0.04), (".webp", "WEBP", 0.0),
                                         (".bmp", "BMP", 0.0)])
def test_8bit_formats_round_trip(tmp_path: Path, ext: str, fmt: str, tol: float) -> None:
    x = smooth()
    like = Image(x, bit_depth=16, format="PNG")
    out = write_image(tmp_path / f"a{ext}", x, like=like)  # 16 bits requested, clamped to 8
    im = read_image(out)
    assert (im.format, im.bit_depth, im.pixels.shape) == (fmt, 8, x.shape)
    assert np.abs(im.pixels - x).max() <= tol + 0.5 / 255 + 1e-6


def test_gray_jpeg_and_bmp_stay_gray(tmp_path: Path) -> None:
    for ext in (".jpg", ".bmp"):
        im = read_image(write_image(tmp_path / f"g{ext}", smooth(c=1)))
        assert im.is_gray and im.pixels.shape == (19, 23, 1)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_kept(tmp_path: Path, ext: str) -> None:
    icc = icc_srgb()
    like = Image(smooth(), icc_profile=icc, bit_depth=8)
    for depth in (8, 16) if ext in (".png", ".tif") else (8,):
        im = read_image(write_image(tmp_path / f"a{depth}{ext}", like.pixels, like=like, bit_depth=depth))
        assert im.icc_profile == icc


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_exif_kept(tmp_path: Path, ext: str) -> None:
    like = Image(smooth(), exif=exif_bytes())
    for depth in (8, 16) if ext == ".png" else (8,):
        im = read_image(write_image(tmp_path / f"a{depth}{ext}", like.pixels, like=like, bit_depth=depth))
        assert im.exif is not None
        exif = PILImage.Exif()
        exif.load(im.exif)
        assert exif[0x010F] == "n3 test camera"


def test_gray_icc_not_attached_to_rgb(tmp_path: Path) -> None:
    gray_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    gray_icc = gray_icc[:16] + b"GRAY" + gray_icc[20:]
    like = Image(smooth(c=1), icc_profile=gray_icc)
    im = read_image(write_image(tmp_path / "a.png", smooth(c=3), like=like))
    assert im.icc_profile is None


def test_output_bit_depth_clamps() -> None:
    assert output_bit_depth("PNG", 32) == 16
    assert output_bit_depth("JPEG", 16) == 8
    assert output_bit_depth("TIFF", 32) == 32
    with pytest.raises(ImageError):
        output_bit_depth("PNG", 12)


def test_write_clips_and_rounds(tmp_path: Path) -> None:
    x = np.array([[-0.5, 0.0, 0.5 / 255 - 1e-6, 0.5 / 255 + 1e-6, 1.0, 7.0, np.nan]], dtype=np.float32)
    im = read_image(write_image(tmp_path / "c.png", x))
    np.testing.assert_array_equal(np.round(im.pixels[0, :, 0] * 255), [0, 0, 0, 1, 255, 255, 0])


# ------------------------------------------------------------------------------------- error cases


def assert_one_line(err: pytest.ExceptionInfo[ImageError], name: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and name in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, N3Error)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file") as err:
        read_image(tmp_path / "nope.png")
    assert_one_line(err, "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="folder") as err:
        read_image(tmp_path)
    assert_one_line(err, str(tmp_path))


def test_text_file_renamed_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("these are not pixels\n")
    with pytest.raises(ImageError, match="not an image") as err:
        read_image(tmp_path / "notes.png")
    assert_one_line(err, "notes.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.png")


@pytest.mark.parametrize("ext,depth", [(".png", 8), (".png", 16), (".jpg", 8), (".tif", 16), (".bmp", 8)])
def test_truncated_image(tmp_path: Path, ext: str, depth: int) -> None:
    data = write_image(tmp_path / f"full{ext}", smooth(40, 40), bit_depth=depth).read_bytes()
    (tmp_path / f"cut{ext}").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="corrupt") as err:
        read_image(tmp_path / f"cut{ext}")
    assert_one_line(err, f"cut{ext}")


def test_too_many_pixels(tmp_path: Path) -> None:
    for ext in (".png", ".tif"):
        path = write_image(tmp_path / f"big{ext}", smooth(30, 40))
        with pytest.raises(TooLargeError, match="over the limit of 0.001 megapixels$") as err:
            read_image(path, max_pixels=1000)
        assert isinstance(err.value, ImageError) and err.value.about == "max_pixels"  # the CLI: --allow-large
        assert_one_line(err, f"big{ext}")
        assert "1200" in str(err.value) or "0.0012" in str(err.value)
        assert read_image(path, max_pixels=None).pixels.shape == (30, 40, 3)
        assert read_image(path, max_pixels=1200).width == 40


def test_pillow_bomb_limit_does_not_override_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "a.png", smooth(30, 40))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this image
    assert read_image(path, max_pixels=None).height == 30
    assert PILImage.MAX_IMAGE_PIXELS == 100
    with pytest.raises(ImageError, match="megapixels"):
        read_image(path, max_pixels=500)


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    with pytest.raises(ImageExistsError, match="already exists$") as err:
        write_image(target, smooth())
    assert_one_line(err, "out.png")
    assert isinstance(err.value, ImageError) and err.value.about == "overwrite"  # the CLI: --force
    assert target.read_bytes() == b"precious"
    write_image(target, smooth(), overwrite=True)
    assert read_image(target).width == 23
    assert files_in(tmp_path) == ["out.png"]


def test_output_appearing_during_write_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"

    def racing(f: str, *args: object) -> None:
        Path(f).write_bytes(b"ours")
        target.write_bytes(b"theirs")

    monkeypatch.setattr("n3cli.imaging.io._write_data", racing)
    with pytest.raises(ImageExistsError, match="already exists$"):
        write_image(target, smooth())
    assert target.read_bytes() == b"theirs" and files_in(tmp_path) == ["out.png"]


def test_unwritable_folder_leaves_nothing(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(ImageError, match="cannot write") as err:
        write_image(not_a_folder / "out.png", smooth())
    assert_one_line(err, "out.png")
    assert files_in(tmp_path) == ["file.txt"]


def test_failed_encode_removes_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        Path(str(args[0])).write_bytes(b"half")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("n3cli.imaging.io._write_data", broken)
    with pytest.raises(ImageError, match="disk on fire") as err:
        write_image(tmp_path / "out.tif", smooth())
    assert_one_line(err, "out.tif")
    assert files_in(tmp_path) == []


def test_bad_output_name_and_shape(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="extension"):
        write_image(tmp_path / "out.gif", smooth())
    with pytest.raises(ImageError, match="shape"):
        write_image(tmp_path / "out.png", np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ImageError, match="folder"):
        write_image(tmp_path, smooth())
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------------------------------- listing


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.tif", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    extra = tmp_path / "sub" / "d.png"
    found = list_images([tmp_path, extra, tmp_path / "a.jpg"])
    assert [p.name for p in found] == ["a.jpg", "b.PNG", "c.tif", "d.png"]
    assert ".png" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS


def test_list_images_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageError, match="no images") as err:
        list_images([tmp_path])
    assert_one_line(err, str(tmp_path))
    with pytest.raises(ImageError, match="no such file"):
        list_images([tmp_path / "missing.png"])
