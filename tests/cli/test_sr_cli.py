"""n3 sr as a user meets it (output sizes, alpha, reference scores, bad input), and super_resolve's colour path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from n3cli import api, super_resolve
from n3cli.cli.app import app
from n3cli.errors import N3Error
from n3cli.imaging.io import read_image
from n3cli.imaging.resize import imresize_np
from n3cli.nn.nets import NetConfig, n3net_light, n3net_sr
from n3cli.weights import ModelInfo, save_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained SR model (enough to exercise the tool)."""
    model = n3net_sr(depth=3, features=8, embed_features=8).eval()
    path = tmp_path_factory.mktemp("w") / "tiny-sr.safetensors"
    return save_weights(path, model, ModelInfo(name="tiny-sr", task="sr"))


@pytest.fixture(scope="module")
def denoise_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = n3net_light(depth=3, features=8, embed_features=8).eval()
    return save_weights(tmp_path_factory.mktemp("d") / "tiny-dn.safetensors", model, ModelInfo(name="tiny-dn"))


def _img(path: Path, shape: tuple[int, ...] = (14, 18), seed: int = 0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 255, shape).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def run(*args: object) -> object:
    """``n3 sr ARGS --threads 1`` (one thread: the tiny model is fast, thread start-up is not)."""
    return runner.invoke(app, ["sr", *[str(a) for a in args], "--threads", "1"])


def _assert_clean_failure(result: object, pattern: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert pattern.lower() in result.output.lower(), result.output


@pytest.mark.parametrize("shape,scale", [((14, 18), 2), ((10, 12, 3), 3)])
def test_output_is_scale_times_input(tmp_path: Path, weights: Path, shape: tuple[int, ...], scale: int) -> None:
    src = _img(tmp_path / "a.png", shape)
    result = run(src, "--scale", scale, "--weights", weights, "--quiet")
    assert result.exit_code == 0, result.output
    out = read_image(tmp_path / f"a_x{scale}.png").pixels
    channels = shape[2] if len(shape) == 3 else 1
    assert out.shape == (shape[0] * scale, shape[1] * scale, channels)


def test_rgba_alpha_is_upscaled(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "c.png", (10, 12, 4), seed=3)
    result = run(src, "--scale", "2", "--weights", weights, "-o", tmp_path / "c_big.png", "--quiet")
    assert result.exit_code == 0, result.output
    a, b = read_image(src), read_image(tmp_path / "c_big.png")
    assert b.pixels.shape == (20, 24, 3) and b.alpha is not None and b.alpha.shape == (20, 24)
    want = np.clip(imresize_np(a.alpha.astype(np.float64) / 255.0, 2.0), 0, 1)
    assert np.abs(b.alpha / 255.0 - want).max() <= 0.6 / 255


def test_reference_json_record(tmp_path: Path, weights: Path) -> None:
    hr = np.random.default_rng(1).integers(0, 255, (38, 50, 3)).astype(np.uint8)  # crops to 36x48 at x3
    Image.fromarray(hr).save(tmp_path / "hr.png")
    src = _img(tmp_path / "lr.png", (12, 16, 3))
    result = run(src, "--scale", "3", "--weights", weights, "--reference", tmp_path / "hr.png", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(record) == {"input", "output", "scale", "psnr_bicubic", "psnr_out", "ssim_out", "seconds"}
    assert record["scale"] == 3 and record["output"].endswith("lr_x3.png")
    assert 0 < record["psnr_bicubic"] < 60 and 0 < record["psnr_out"] < 60 and -1 <= record["ssim_out"] <= 1


def test_reference_size_mismatch(tmp_path: Path, weights: Path) -> None:
    src, ref = _img(tmp_path / "lr.png", (12, 16)), _img(tmp_path / "hr.png", (30, 30))
    result = run(src, "--scale", "2", "--weights", weights, "--reference", ref)
    _assert_clean_failure(result, "reference is 30x30")
    assert not (tmp_path / "lr_x2.png").exists()  # checked before any work


@pytest.mark.parametrize("scale,pattern", [("2.5", "an integer"), ("abc", "an integer"), ("1", "at least 2"),
                                           ("0", "at least 2"), ("-3", "at least 2"), ("100", "at most 8")])
def test_bad_scales(tmp_path: Path, weights: Path, scale: str, pattern: str) -> None:
    src = _img(tmp_path / "a.png")
    before = set(os.listdir(tmp_path))
    result = run(src, "--scale", scale, "--weights", weights)
    _assert_clean_failure(result, f"--scale must be {pattern}")
    assert len(result.output.strip().splitlines()) == 1
    assert set(os.listdir(tmp_path)) == before


def test_existing_output_needs_force(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "a.png")
    out = tmp_path / "a_x2.png"
    out.write_bytes(b"keep me")
    refused = run(src, "--scale", "2", "--weights", weights)
    _assert_clean_failure(refused, "--force")
    assert "model " not in refused.output  # refused before the model is loaded
    assert out.read_bytes() == b"keep me"
    assert run(src, "--scale", "2", "--weights", weights, "--force", "-q").exit_code == 0
    assert read_image(out).pixels.shape == (28, 36, 1)


def test_denoise_weights_are_refused(tmp_path: Path, denoise_weights: Path) -> None:
    src = _img(tmp_path / "a.png")
    _assert_clean_failure(run(src, "--scale", "2", "--weights", denoise_weights), "for task 'denoise', not 'sr'")
    assert not (tmp_path / "a_x2.png").exists()


def test_help_has_examples() -> None:
    text = runner.invoke(app, ["sr", "--help"]).output
    assert "n3 sr photo.png --scale 2" in text
    assert " sr " in runner.invoke(app, ["--help"]).output


# --- the Python API ----------------------------------------------------------------------------

class _Identity(torch.nn.Module):
    """Stands in for an SR network: returns its input (so super_resolve must equal bicubic)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = NetConfig(arch="n3net-sr")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _identity_restorer() -> api.Restorer:
    return api.Restorer(_Identity(), ModelInfo(name="identity", task="sr"), torch.device("cpu"))  # type: ignore[arg-type]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_identity_model_equals_bicubic(channels: int) -> None:
    """Pins the YCbCr round trip (RGB), the gray path and alpha: an identity network gives plain bicubic."""
    lr = np.random.default_rng(5).random((13, 17, channels)).astype(np.float32)
    out = super_resolve(lr, 3, model=_identity_restorer(), tile=32, overlap=8)  # tiled, too
    want = np.clip(imresize_np(lr.astype(np.float64), 3.0), 0.0, 1.0)
    assert out.dtype == np.float32 and out.shape == (39, 51, channels)
    np.testing.assert_allclose(out, want, atol=2e-5)


def test_super_resolve_scales_and_task(weights: Path, denoise_weights: Path) -> None:
    ident = _identity_restorer()
    gray = np.random.default_rng(2).random((8, 9)).astype(np.float32)
    assert super_resolve(gray, 2.0, model=ident).shape == (16, 18)  # integral floats are fine
    for bad in (2.5, 1, "x", True):
        with pytest.raises(N3Error, match="scale"):
            super_resolve(gray, bad, model=ident)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="outside the trained scales"):
        assert super_resolve(gray, 5, model=ident).shape == (40, 45)
    with pytest.raises(N3Error, match="too small"):
        super_resolve(gray[:3], 2, model=ident)  # a 6-pixel-high output
    with pytest.raises(N3Error, match="not 'sr'"):
        super_resolve(gray, 2, model=denoise_weights)
    rgb = (np.random.default_rng(4).random((8, 9, 3)) * 255).astype(np.uint8)
    assert super_resolve(rgb, 2, model=weights, device="cpu").shape == (16, 18, 3)
