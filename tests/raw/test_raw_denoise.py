"""Raw denoising: the API (CFA handling, NLF priority), `n3 raw-denoise` end to end, and `n3 bench --task raw`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from n3cli import api
from n3cli.cli.app import app
from n3cli.errors import N3Error
from n3cli.imaging import noise
from n3cli.imaging.io import read_image
from n3cli.nn.nets import n3net_light
from n3cli.raw import develop, pack_bayer, read_raw, write_dng
from n3cli.raw.io import RawImage, denormalise
from n3cli.weights import ModelInfo, save_weights

from ..conftest import tiny_color_weights, tiny_nlf_weights

runner = CliRunner()
NLF = (2e-3, 2e-5)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained noise-level-conditional model."""
    return tiny_nlf_weights(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fixed-σ (not conditional) model."""
    model = n3net_light(in_channels=1, depth=3, features=8, embed_features=8).eval()
    info = ModelInfo(name="plain", planes=["image"], sigma=25.0)
    return save_weights(tmp_path_factory.mktemp("p") / "plain.safetensors", model, info)


@pytest.fixture(scope="module")
def restorer(weights: Path) -> api.Restorer:
    return api.load_raw_model(weights, "cpu")


def _synthetic_raw(h: int = 128, w: int = 160, seed: int = 0) -> RawImage:
    """A smooth GRBG scene with Poisson-Gaussian noise at :data:`NLF`, as a RawImage (14-bit)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    scene = 0.15 + 0.6 * x + 0.1 * np.sin(9 * y)
    gen = noise.generator(seed)
    mosaic = noise.add_poisson_gaussian(torch.from_numpy(scene.astype(np.float32)), *NLF, gen).numpy()
    black, white = np.array([[512.0, 512.0], [512.0, 512.0]]), 16383.0
    raw = RawImage(path=Path("synthetic.dng"), mosaic=mosaic, pattern="GRBG", black_levels=black,
                   white_level=white, camera_wb=(2.0, 1.0, 1.5, 1.0), daylight_wb=(2.0, 1.0, 1.5, 1.0),
                   color_matrix=np.eye(3, 4), xyz_to_cam=(np.array([[0.9, -0.4, 0.0], [-0.3, 1.3, 0.2],
                                                                     [0.0, 0.15, 0.7]]),),
                   illuminants=(21,), make="Test", model="Cam")
    raw.mosaic = denormalise(raw, mosaic).astype(np.float32)  # the integers a DNG would hold, normalised again
    raw.mosaic = (raw.mosaic - 512.0) / (white - 512.0)
    return raw


@pytest.fixture
def dng(tmp_path: Path) -> Path:
    """A small synthetic DNG with a NoiseProfile tag."""
    raw = _synthetic_raw()
    return write_dng(tmp_path / "scene.dng", raw, raw.mosaic, noise_profile=NLF)


def run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


# --- API ------------------------------------------------------------------------------------------

def test_planes_mode_denoises_each_cfa_plane_as_a_gray_image(restorer: api.Restorer) -> None:
    raw = _synthetic_raw(64, 80)
    out = api.denoise_mosaic(raw.mosaic, raw.pattern, NLF, model=restorer, cfa="planes")
    assert out.shape == raw.mosaic.shape and out.dtype == np.float32
    planes = pack_bayer(raw.mosaic, raw.pattern)
    expected = [api.denoise(p, nlf=NLF, model=restorer) for p in planes]
    assert np.allclose(pack_bayer(out, raw.pattern), np.stack(expected), atol=1e-5)
    whole = api.denoise_mosaic(raw.mosaic, raw.pattern, NLF, model=restorer, cfa="mosaic")
    assert np.allclose(whole, api.denoise(raw.mosaic, nlf=NLF, model=restorer), atol=1e-5)
    odd = api.denoise_mosaic(raw.mosaic[:63, :79], raw.pattern, NLF, model=restorer)
    assert odd.shape == (63, 79) and np.all(np.isfinite(odd))


def test_the_network_sees_the_mosaic_clipped_as_in_training(restorer: api.Restorer) -> None:
    m = _synthetic_raw(64, 80).mosaic.copy()
    m[:20] -= 0.05  # below the black level, as real raws have
    m[-10:] += 1.0  # above the white level
    out = api.denoise_mosaic(m, "RGGB", NLF, model=restorer)
    assert np.array_equal(out, api.denoise_mosaic(np.clip(m, 0, 1), "RGGB", NLF, model=restorer))


def test_api_errors(restorer: api.Restorer, plain_weights: Path) -> None:
    m = _synthetic_raw(32, 32).mosaic
    with pytest.raises(N3Error, match="noise-level-conditional"):
        api.denoise_mosaic(m, "RGGB", NLF, model=str(plain_weights), device="cpu")
    with pytest.raises(N3Error, match="cfa"):
        api.denoise_mosaic(m, "RGGB", NLF, model=restorer, cfa="bayer")
    with pytest.raises(N3Error, match="non-negative"):
        api.denoise_mosaic(m, "RGGB", (-1.0, 0.0), model=restorer)
    with pytest.raises(N3Error, match="NaN"):
        api.denoise_mosaic(np.full((32, 32), np.nan, np.float32), "RGGB", NLF, model=restorer)


def test_api_refuses_what_would_be_garbage(restorer: api.Restorer, tmp_path: Path) -> None:
    m = _synthetic_raw(32, 32).mosaic
    with pytest.raises(N3Error, match="normalised to \\[0, 1\\]"):  # raw integers, not a normalised mosaic
        api.denoise_mosaic(m * 16383 + 512, "RGGB", NLF, model=restorer)
    color = api.load_model(tiny_color_weights(tmp_path), "denoise-color", "cpu")
    with pytest.raises(N3Error, match="gray model"):  # conditional, but RGB: crashed inside the network
        api.denoise_mosaic(m, "RGGB", NLF, model=color)
    for tile, overlap in ((32, -3), (2.5, 8), (0, 8), ((32, 0), 8), (32, 1.5), (True, 8)):
        with pytest.raises(N3Error, match="tile"):
            api.denoise_mosaic(m, "RGGB", NLF, model=restorer, tile=tile, overlap=overlap)  # type: ignore[arg-type]
    assert api.denoise_mosaic(m, "RGGB", NLF, model=restorer, tile=np.int64(32), overlap=0).shape == m.shape


def test_nlf_priority(dng: Path, tmp_path: Path) -> None:
    raw = read_raw(dng)
    assert api.raw_nlf(raw) == api.NLFInfo(*NLF, "dng")
    given = api.raw_nlf(raw, (1e-4, 1e-6))
    assert given.source == "given" and (given.a, given.b) == (1e-4, 1e-6)
    assert given.sigma() == pytest.approx(0.00714, abs=1e-5)
    untagged = read_raw(write_dng(tmp_path / "untagged.dng", raw, raw.mosaic))
    est = api.raw_nlf(untagged)
    assert est.source == "estimated"
    assert est.sigma() == pytest.approx(api.NLFInfo(*NLF, "").sigma(), rel=0.3)
    assert api.raw_nlf(dataclasses.replace(raw, path=tmp_path / "gone.dng")).source == "estimated"


def test_raw_denoise_on_blackmagic_crop(blackmagic: RawImage, restorer: api.Restorer) -> None:
    h, w = blackmagic.shape
    top, left = h // 4 * 2, w // 4 * 2  # even: the CFA pattern is unchanged
    crop = dataclasses.replace(blackmagic, mosaic=blackmagic.mosaic[top:top + 192, left:left + 256], crop=None)
    out, info = api.raw_denoise(crop, model=restorer)
    assert out.shape == (192, 256) and np.all(np.isfinite(out))
    assert info.source == "estimated" and info.a >= 0 and info.b >= 0 and info.sigma() > 0


# --- CLI ------------------------------------------------------------------------------------------

def test_cli_end_to_end(dng: Path, tmp_path: Path, weights: Path, restorer: api.Restorer) -> None:
    out, out_dng = tmp_path / "out.png", tmp_path / "out.dng"
    result = run("raw-denoise", dng, "-o", out, "--compare", "--dng", out_dng, "--weights", weights,
                 "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["nlf_source"] == "dng" and record["nlf"] == pytest.approx(list(NLF))
    assert record["cfa"] == "planes" and record["model"] == "tiny"
    raw = read_raw(dng)
    developed = develop(raw, None, no_auto_bright=True)
    img = np.asarray(Image.open(out))
    assert img.shape == developed.shape and img.dtype == np.uint8
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out_original.png")), developed)
    back = read_raw(out_dng)  # the denoised mosaic round trips through the DNG (to the raw integers)
    assert back.pattern == raw.pattern and back.shape == raw.shape
    clean = api.denoise_mosaic(raw.mosaic, raw.pattern, NLF, model=restorer)
    assert np.array_equal(denormalise(back, back.mosaic), denormalise(raw, clean))
    assert np.array_equal(img, develop(back, None, no_auto_bright=True))

    nlf_out = tmp_path / "given.tif"
    result = run("raw-denoise", dng, "-o", nlf_out, "--nlf", "1e-4,1e-6", "--bits", "16", "--weights", weights,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "--nlf" in result.output and "0.0071" in result.output
    assert read_image(nlf_out).bit_depth == 16


def test_cli_errors(dng: Path, tmp_path: Path, weights: Path, plain_weights: Path) -> None:
    def fails(*args: object, pattern: str) -> None:
        result = run("raw-denoise", *args, "--weights", weights, "--device", "cpu")
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and pattern.lower() in result.output.lower(), result.output

    out = tmp_path / "o.png"
    fails(tmp_path / "missing.dng", "-o", out, pattern="no such file")
    png = tmp_path / "photo.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(png)
    fails(png, "-o", out, pattern="not a raw image")
    fails(dng, "-o", out, "--nlf", "1e-4", pattern="--nlf")
    fails(dng, "-o", out, "--nlf", "-1,0", pattern="non-negative")
    fails(dng, "-o", tmp_path / "o.gif", pattern="unknown output format")
    fails(dng, "-o", tmp_path / "o.jpg", "--bits", "16", pattern="PNG or TIFF")
    fails(dng, "-o", out, "--bits", "12", pattern="--bit-depth must be 8 or 16")
    fails(dng, "-o", out, "--bit-depth", "12", pattern="--bit-depth must be 8 or 16")
    fails(dng, "-o", tmp_path / "no" / "o.png", pattern="does not exist")
    fails(dng, "-o", out, "--dng", dng, "--force", pattern="overwrite the input")
    fails(dng, "-o", out, "--dng", tmp_path / "x.tif", pattern=".dng")
    (tmp_path / "taken.dng").write_bytes(b"keep")
    fails(dng, "-o", out, "--dng", tmp_path / "taken.dng", pattern="already exists")
    assert not out.exists() and (tmp_path / "taken.dng").read_bytes() == b"keep"
    result = run("raw-denoise", dng, "-o", out, "--weights", plain_weights, "--device", "cpu")
    assert result.exit_code == 2 and "noise-level-conditional" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "scene.dng", "taken.dng"]


def test_cli_removes_partial_outputs(dng: Path, tmp_path: Path, weights: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import n3cli.cli.raw as raw_cmd
    from n3cli.raw.io import RawError

    def broken(*args: object, **kwargs: object) -> None:
        raise RawError("disk full")

    monkeypatch.setattr(raw_cmd, "write_dng", broken)
    result = run("raw-denoise", dng, "-o", tmp_path / "o.png", "--compare", "--dng", tmp_path / "o.dng",
                 "--weights", weights, "--device", "cpu")
    assert result.exit_code == 2 and "disk full" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.dng"]


def test_force_keeps_every_old_output_when_a_later_write_fails(dng: Path, tmp_path: Path, weights: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import n3cli.cli.raw as raw_cmd
    from n3cli.raw.io import RawError

    def broken(*args: object, **kwargs: object) -> None:
        raise RawError("disk full")

    (tmp_path / "o.png").write_bytes(b"old photo")
    (tmp_path / "o.dng").write_bytes(b"old dng")
    monkeypatch.setattr(raw_cmd, "write_dng", broken)
    result = run("raw-denoise", dng, "-o", tmp_path / "o.png", "--dng", tmp_path / "o.dng", "--force",
                 "--weights", weights, "--device", "cpu")
    assert result.exit_code == 2 and "disk full" in result.output
    assert (tmp_path / "o.png").read_bytes() == b"old photo" and (tmp_path / "o.dng").read_bytes() == b"old dng"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.dng", "o.png", "scene.dng"]  # no temporary files
    monkeypatch.undo()
    result = run("raw-denoise", dng, "-o", tmp_path / "o.png", "--dng", tmp_path / "o.dng", "--force",
                 "--weights", weights, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "o.png").pixels.shape == (128, 160, 3)
    assert (tmp_path / "o.png").stat().st_mode & 0o777 == 0o644  # the old file's mode, not a temporary file's
    assert read_raw(tmp_path / "o.dng").shape == (128, 160)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.dng", "o.png", "scene.dng"]


def test_outputs_that_cannot_be_staged_are_a_one_line_error(dng: Path, tmp_path: Path, weights: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import n3cli.atomic

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(n3cli.atomic.tempfile, "mkstemp", refused)
    result = run("raw-denoise", dng, "-o", tmp_path / "o.png", "--weights", weights, "--device", "cpu")
    assert result.exit_code == 2 and "cannot write the outputs (Permission denied" in result.output, result.output
    assert "Traceback" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == ["scene.dng"]


def test_cli_refuses_an_rgb_model_and_a_plain_tiff(dng: Path, tmp_path: Path) -> None:
    import tifffile

    color = tiny_color_weights(tmp_path)
    result = run("raw-denoise", dng, "-o", tmp_path / "o.png", "--weights", color, "--device", "cpu")
    assert result.exit_code == 2 and "gray model" in result.output and "Traceback" not in result.output
    gray = tmp_path / "gray.tif"  # LibRaw reads a 16-bit gray TIFF as an RGGB mosaic without any colour
    tifffile.imwrite(gray, (np.random.default_rng(0).random((64, 64)) * 60000).astype(np.uint16))
    result = run("raw-denoise", gray, "-o", tmp_path / "g.png", "--nlf", "1e-3,1e-5", "--device", "cpu")
    assert result.exit_code == 2 and "no colour matrix" in result.output, result.output
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "g.png").exists()


def test_nlf_messages(dng: Path, tmp_path: Path, weights: Path) -> None:
    import tifffile

    from n3cli.raw.dng import _dng_tags

    raw = read_raw(dng)
    bad = tmp_path / "bad.dng"  # written by some other tool: write_dng refuses such a tag
    tifffile.imwrite(bad, denormalise(raw, raw.mosaic), photometric=32803, compression=None, subfiletype=0,
                     metadata=None, extratags=_dng_tags(raw, None) + [(51041, 12, 2, (-1e-3, 1e-5), True)])
    result = run("raw-denoise", bad, "-o", tmp_path / "b.png", "--weights", weights, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "NoiseProfile tag (-0.001, 1e-05) is not a valid noise level" in result.output
    assert "estimated from the image" in result.output
    huge = write_dng(tmp_path / "huge.dng", raw, raw.mosaic, noise_profile=(5.0, 1.0))
    result = run("raw-denoise", huge, "-o", tmp_path / "h.png", "--weights", weights, "--device", "cpu")
    assert result.exit_code == 2 and "NoiseProfile" in result.output and "--nlf a,b" in result.output
    result = run("raw-denoise", dng, "-o", tmp_path / "n.png", "--nlf", "nan,1e-6", "--weights", weights)
    assert result.exit_code == 2 and "finite" in result.output


def test_development_caps_libraw_threads(dng: Path) -> None:
    raw = read_raw(dng)
    before = torch.get_num_threads()
    torch.set_num_threads(512)  # LibRaw's memory pool overflowed with its OpenMP team at torch's count
    try:
        api.denoise_mosaic(raw.mosaic[:32, :32], raw.pattern, NLF, model=api.load_raw_model(None, "cpu"))
        assert develop(raw).shape == (128, 160, 3)
        assert torch.get_num_threads() == 512
    finally:
        torch.set_num_threads(before)


# --- bench ----------------------------------------------------------------------------------------

def test_bench_raw(tmp_path: Path, weights: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    y, x = np.mgrid[0:128, 0:160] / 160
    img = np.clip(0.5 + 0.4 * np.sin(5 * x) * np.cos(4 * y), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(folder / "im.png")
    out = tmp_path / "r.json"
    result = run("bench", "--task", "raw", "--dataset", folder, "--nlf", "4e-3,4e-5", "--device", "cpu",
                 "--methods", f"noisy,weights:{weights},n3net-est:{weights},gat-bm3d", "--json", out, "--quiet")
    assert result.exit_code == 0, result.output
    records = {r["method"]: r for r in json.loads(out.read_text())}
    assert set(records) == {"noisy", "tiny", "tiny-est", "gat-bm3d"}
    for r in records.values():
        assert r["task"] == "raw" and r["nlf"] == [4e-3, 4e-5] and "sigma" not in r and r["images"] == 1
        assert np.isfinite(r["psnr"]) and r["paper_psnr"] is None
    assert records["gat-bm3d"]["psnr"] > records["noisy"]["psnr"] + 3
    assert run("bench", "--task", "raw", "--dataset", folder, "--sigma", "25").exit_code == 2
    assert run("bench", "--task", "raw", "--dataset", folder, "--nlf", "0,1e-4").exit_code == 2
    assert run("bench", "--dataset", folder, "--nlf", "1e-3,1e-5").exit_code == 2


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_dng_is_a_one_line_error(dng: Path, tmp_path: Path, weights: Path, keep: float) -> None:
    data = dng.read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[: int(len(data) * keep)])
    result = run("raw-denoise", cut, "-o", tmp_path / "o.png", "--weights", weights, "--nlf", "1e-4,1e-6")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "b'" not in result.output  # LibRaw's bytes messages are decoded
    assert not (tmp_path / "o.png").exists()
