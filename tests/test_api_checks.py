"""What the library refuses or repairs before (and after) the network: inputs on another scale, flat images, plans
that do not fit, and a network output that is not finite (never handed on as an image)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from n3cli import api
from n3cli.errors import N3Error

from .conftest import tiny_color_weights, tiny_nlf_weights


@pytest.fixture(scope="module")
def gray_model(tmp_path_factory: pytest.TempPathFactory) -> api.Restorer:
    return api.load_model(tiny_nlf_weights(tmp_path_factory.mktemp("w")), device="cpu")


@pytest.fixture(scope="module")
def color_model(tmp_path_factory: pytest.TempPathFactory) -> api.Restorer:
    return api.load_model(tiny_color_weights(tmp_path_factory.mktemp("wc")), device="cpu")


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("scale", [255.0, 65535.0, -255.0])
def test_float_images_on_another_scale_are_refused(gray_model: api.Restorer, scale: float) -> None:
    img = scale * _image((32, 32))
    with pytest.raises(N3Error, match=r"expected in \[0, 1\]"):
        api.denoise(img, 25, model=gray_model)
    with pytest.raises(N3Error, match=r"expected in \[0, 1\]"):
        api.estimate_sigma(img)


def test_float_noise_beyond_0_1_is_accepted(gray_model: api.Restorer) -> None:
    """Gaussian noise of the largest accepted σ (150) reaches far past [0, 1]; such an image is still denoised."""
    clean = _image((48, 48))
    noisy = clean + np.random.default_rng(1).normal(0, api.SIGMA_LIMIT / 255, clean.shape).astype(np.float32)
    assert noisy.max() > 2 and noisy.min() < -1
    with pytest.warns(UserWarning):  # beyond the σ the model was trained for
        out = api.denoise(noisy, api.SIGMA_LIMIT, model=gray_model)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 3)])
def test_a_flat_image_has_no_noise(shape: tuple[int, ...]) -> None:
    """The wavelet estimator finds no nonzero detail in a constant image (skimage returns NaN): σ 0, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert api.estimate_sigma(np.zeros(shape, np.float32)) == 0.0
        flat = api.estimate_channel_sigmas(np.full((32, 32, 3), 0.5, np.float32), "opponent")
    assert flat == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)


def test_an_estimated_sigma_over_the_limit_is_refused(gray_model: api.Restorer) -> None:
    """As a given σ over the limit is: beyond it the output is no estimate of the image."""
    noisy = np.random.default_rng(0).normal(0.5, 0.75, (64, 64)).astype(np.float32)  # σ ≈ 190 levels
    with pytest.raises(N3Error, match="estimated sigma"):
        api.denoise(noisy, model=gray_model)


def test_a_plan_comes_instead_of_sigma(gray_model: api.Restorer) -> None:
    img = _image((32, 32))
    plan = api.plan_denoise(img, gray_model.info, 25)
    with pytest.raises(N3Error, match="either a plan or sigma"):
        api.denoise(img, 50, model=gray_model, plan=plan)
    assert np.isfinite(api.denoise(img, model=gray_model, plan=plan)).all()
    rgb = _image((32, 32, 3))
    plan = api.plan_denoise(rgb, gray_model.info, color="rgb")  # n3 bench --color rgb on real pairs
    assert api.denoise(rgb, model=gray_model, plan=plan, color="rgb").shape == rgb.shape
    with pytest.raises(N3Error, match="differs from the plan"):
        api.denoise(rgb, model=gray_model, plan=plan, color="opponent")


def test_a_plan_must_fit_the_image_and_the_model(gray_model: api.Restorer, color_model: api.Restorer) -> None:
    gray, rgb = _image((32, 32)), _image((32, 32, 3))
    gray_plan = api.plan_denoise(gray, gray_model.info, 25)
    rgb_plan = api.plan_denoise(rgb, gray_model.info, 25)
    color_plan = api.plan_denoise(rgb, color_model.info)
    with pytest.raises(N3Error, match="does not fit a colour image"):
        api.denoise(rgb, model=gray_model, plan=gray_plan)
    with pytest.raises(N3Error, match="does not fit a gray image"):
        api.denoise(gray, model=gray_model, plan=rgb_plan)
    with pytest.raises(N3Error, match="does not fit"):
        api.denoise(rgb, model=gray_model, plan=color_plan)
    with pytest.raises(N3Error, match="does not fit"):
        api.denoise(rgb, model=color_model, plan=rgb_plan)
    assert api.denoise(gray, model=color_model, plan=api.plan_denoise(gray, color_model.info)).shape == gray.shape


def test_a_network_output_that_is_not_finite_is_refused(gray_model: api.Restorer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    original = gray_model.model.forward

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        y = original(*args, **kwargs)
        return y.clone().index_fill_(-1, torch.tensor([3]), float("nan"))

    monkeypatch.setattr(gray_model.model, "forward", broken)
    with pytest.raises(N3Error, match="NaN or infinite"):
        api.denoise(_image((32, 32)), 25, model=gray_model)


def test_weights_that_do_not_fit_say_which_tensor(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from n3cli.weights import load_weights

    path = tiny_nlf_weights(tmp_path)
    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.ndim == 1)
    state[name] = state[name][:1].clone()
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(N3Error, match=f"size mismatch for {name}"):
        load_weights(tmp_path / "bad.safetensors")


def test_a_raw_without_a_noise_level_names_the_flag_on_the_command_line() -> None:
    from n3cli.cli.common import error_line

    exc = api.NLFUnknownError("x.dng: cannot estimate the noise level (too little flat area)")
    assert exc.about == "nlf" and error_line(exc).endswith("(give it with --nlf a,b)")
