"""A colour, blind-capable model: RGB in one pass, the level inferred when none is given (api and n3 denoise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from n3cli import api
from n3cli.cli.app import app
from n3cli.errors import N3Error
from n3cli.imaging.io import read_image

from .conftest import tiny_color_weights, tiny_nlf_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def color(tmp_path_factory: pytest.TempPathFactory) -> api.Restorer:
    path = tiny_color_weights(tmp_path_factory.mktemp("w"))
    return api.load_model(path, "denoise", "cpu")


def _noisy(shape: tuple[int, ...] = (40, 36, 3), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + rng.normal(0, 0.1, shape), 0, 1).astype(np.float32)


def test_plans_of_a_colour_model(color: api.Restorer) -> None:
    info = color.info
    assert (info.channels, info.blind_capable, info.conditional) == (3, True, True)
    img = _noisy()
    blind = api.plan_denoise(img, info)
    assert (blind.mode, blind.blind, blind.sigmas, blind.estimated) == ("color", True, None, False)
    given = api.plan_denoise(img, info, 20.0)
    assert (given.mode, given.blind, given.sigmas) == ("color", False, (20.0,))
    assert api.plan_denoise(img, info, [15.0, 15.0, 15.0]).sigmas == (15.0,)
    with pytest.raises(N3Error, match="one sigma for R, G and B"):
        api.plan_denoise(img, info, [10.0, 20.0, 30.0])
    with pytest.raises(N3Error, match="one pass"):
        api.plan_denoise(img, info, 20.0, color="opponent")
    assert api.plan_denoise(img, info, nlf=(1e-3, 1e-5)).nlf == (1e-3, 1e-5)
    assert api.plan_denoise(img[:, :, :1], info).mode == "color"


def test_one_pass_over_rgb_blind_or_with_the_level(color: api.Restorer) -> None:
    img = _noisy()
    blind = api.denoise(img, model=color)
    given = api.denoise(img, 25.0, model=color)
    assert blind.shape == given.shape == img.shape and np.isfinite(blind).all()
    assert not np.array_equal(blind, given)
    gray = api.denoise(img[:, :, 0], model=color)  # a gray image goes as R = G = B
    assert gray.shape == img.shape[:2]
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 0.25, np.float32)], axis=2)
    out = api.denoise(rgba, model=color)
    assert np.array_equal(out[:, :, 3], rgba[:, :, 3]) and np.allclose(out[:, :, :3], blind, atol=1e-6)


def test_default_model_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The colour default (where shipped) takes colour images given nothing whose fine-scale noise is low (camera
    noise, or none); Gaussian-like noise, given levels, weights, modes and gray images keep the gray default."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:96] / 96.0
    smooth = np.stack([0.3 + 0.4 * x, 0.2 + 0.5 * y, 0.6 - 0.3 * x * y], axis=2).astype(np.float32)
    gauss = (smooth + rng.normal(0, 10 / 255, smooth.shape)).astype(np.float32)
    monkeypatch.setattr(api, "shipped_default", lambda task: "tiny-color" if task == "denoise-color" else None)
    assert api.choose_denoiser(smooth).task == "denoise-color"
    assert "camera noise or none" in api.choose_denoiser(smooth).reason
    assert api.choose_denoiser(gauss).task == "denoise"
    assert api.choose_denoiser(smooth[:, :, 0]).task == "denoise"
    for kwargs in ({"weights": "my.safetensors"}, {"sigma": 5.0}, {"nlf": (1e-3, 1e-5)}, {"color": "rgb"}):
        assert api.choose_denoiser(smooth, **kwargs).task == "denoise"
    monkeypatch.setattr(api, "shipped_default", lambda task: None)  # none shipped: no estimate, the gray default
    assert api.choose_denoiser(smooth) == api.DenoiserChoice("denoise")


def test_cli_reports_blind_denoising(tmp_path: Path, color: api.Restorer) -> None:
    weights = tiny_color_weights(tmp_path)
    src = tmp_path / "c.png"
    Image.fromarray((_noisy() * 255).astype(np.uint8)).save(src)
    shown = runner.invoke(app, ["denoise", str(src), "--weights", str(weights), "-o", str(tmp_path / "a.png")])
    assert shown.exit_code == 0, shown.output
    assert "noise level inferred by tiny-color (blind)" in shown.output
    assert "noise level inferred (blind)" in shown.output  # the summary line
    res = runner.invoke(app, ["denoise", str(src), "--weights", str(weights), "--json", "-o", str(tmp_path / "b.png")])
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["blind"] is True and rec["color"] == "color" and rec["model"] == "tiny-color"
    assert read_image(tmp_path / "b.png").pixels.shape == (40, 36, 3)
    bad = runner.invoke(app, ["denoise", str(src), "--weights", str(weights), "--color", "rgb"])
    assert bad.exit_code == 2 and "one pass" in bad.output and "Traceback" not in bad.output


def test_cli_announces_only_the_model_it_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera-like photo (no fine-scale noise) goes to the colour default: the gray default, loaded to check the
    options, is not announced as if it ran."""
    from .conftest import shipped_tiny_default

    shipped_tiny_default(tmp_path / "weights", monkeypatch, color="tiny-color-shipped")
    y, x = np.mgrid[0:48, 0:40] / 48.0
    smooth = np.stack([0.3 + 0.4 * x, 0.2 + 0.5 * y, 0.6 - 0.3 * x * y], axis=2)
    src = tmp_path / "photo.png"
    Image.fromarray((smooth * 255).round().astype(np.uint8)).save(src)
    shown = runner.invoke(app, ["denoise", str(src), "-o", str(tmp_path / "out.png")])
    assert shown.exit_code == 0, shown.output
    models = [ln for ln in shown.output.splitlines() if ln.startswith("model ")]
    assert len(models) == 1 and models[0].startswith("model tiny-color-shipped"), shown.output


def test_gray_models_keep_their_colour_modes(tmp_path: Path) -> None:
    gray = api.load_model(tiny_nlf_weights(tmp_path), "denoise", "cpu")
    assert (gray.info.channels, gray.info.blind_capable) == (1, False)
    plan = api.plan_denoise(_noisy(), gray.info)
    assert plan.mode == "opponent" and plan.estimated and not plan.blind
