"""Camera raw training (`--noise raw`), fine-tuning from weights (`--init`) and the raw model's registry task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from n3cli import api
from n3cli.bench.run import setting_key
from n3cli.cli.app import app
from n3cli.errors import N3Error
from n3cli.imaging import noise
from n3cli.train.checkpoint import load
from n3cli.train.config import TrainConfig
from n3cli.train.export import export_run
from n3cli.train.tasks import NoiseSpec, denoise_batch
from n3cli.train.trainer import crop_size, load_initial_weights, train
from n3cli.weights import ModelInfo, default_name

from .conftest import TINY, tiny_config


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        y, x = np.mgrid[0:72, 0:76]
        img = (127 + 60 * np.sin(x / (3 + i)) * np.cos(y / 5) + rng.normal(0, 5, x.shape)).clip(0, 255)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _cfg(tmp_path: Path, data: Path, name: str = "run", **kw: object) -> TrainConfig:
    return tiny_config(tmp_path / name, data, **{"steps": 2, "noise": "raw", "precise_bn": 1, **kw})


def test_cfa_plane_takes_every_other_pixel_at_the_offset() -> None:
    img = torch.arange(2 * 1 * 6 * 8, dtype=torch.float32).view(2, 1, 6, 8)
    out = noise.cfa_plane(img, torch.tensor([1, 2]))
    assert out.shape == (2, 1, 3, 4)
    assert torch.equal(out[0], img[0, :, 0::2, 1::2])
    assert torch.equal(out[1], img[1, :, 1::2, 0::2])


def test_raw_spec() -> None:
    spec = NoiseSpec.parse("raw")
    assert spec.camera and spec.conditional and spec.in_planes == 3 and spec.crop_scale == 2
    assert "CFA planes" in spec.describe()
    assert not NoiseSpec.parse("nlf:0.6").camera and NoiseSpec.parse("nlf:0.6").crop_scale == 1
    assert crop_size(TrainConfig(out="x", data=[], noise="raw", patch=80)) == 160
    assert crop_size(TrainConfig(out="x", data=[], noise="nlf", patch=80)) == 80


def test_camera_batch_is_a_poisson_gaussian_cfa_plane() -> None:
    gen = torch.Generator().manual_seed(3)
    clean = torch.full((64, 1, 64, 64), 0.9)
    x, levels, target = denoise_batch(clean, NoiseSpec.parse("raw"), gen)
    assert x.shape == (64, 1, 32, 32) and levels.shape == (64, 2) and target.shape == (64, 1, 32, 32)
    assert float(x[:, 0].min()) >= 0.0 and float(x[:, 0].max()) <= 1.0  # clipped like a sensor
    a, b = levels[:, 0], levels[:, 1]
    assert bool(((a > 0.99e-4) & (a < 1.01e-1)).all())  # log10 a in [-4, -1]
    ratio = torch.log10(b / a)
    assert float(ratio.min()) >= -3.6 - 1e-3 and float(ratio.max()) <= -1.0 + 1e-3  # log10 b - log10 a
    # Each target is Eq. 13 of a constant: f_c * 0.9^f_e, with f_c in [0.25, 1] and f_e in [1.25, 10].
    t = target.flatten(1)
    assert torch.allclose(t, t[:, :1].expand_as(t))
    assert float(t.min()) >= 0.25 * 0.9 ** 10 - 1e-6 and float(t.max()) <= 0.9 ** 1.25 + 1e-6
    # Noise variance follows the NLF where clipping cannot bite (exact Poisson-Gaussian: mean and variance).
    sd = (a * t[:, 0] + b).sqrt()
    ok = (t[:, 0] - 5 * sd > 0) & (t[:, 0] + 5 * sd < 1) & (t[:, 0] / a > 20)
    assert int(ok.sum()) >= 10
    resid = (x[:, 0] - target[:, 0]).flatten(1)[ok]
    var = resid.var(dim=1)
    assert torch.allclose(var / (a * t[:, 0] + b)[ok], torch.ones(int(ok.sum())), atol=0.15)
    assert float(resid.mean(dim=1).abs().max()) < 0.01


def test_raw_run_validates_on_the_raw_protocol_and_exports_a_raw_model(tmp_path: Path, data: Path) -> None:
    records: list[dict] = []
    train(_cfg(tmp_path, data, loss="nmse"), on_log=records.append)
    vals = [r for r in records if "val_psnr" in r]
    assert vals and vals[-1]["val_nlf"] == list(noise.RAW_NLFS[1]) and vals[-1]["val_sigma"] is None
    assert np.isfinite(vals[-1]["val_psnr"])
    model, info = export_run(tmp_path / "run" / "last.pt", "tiny-raw")
    assert info.task == "raw" and info.conditional
    assert "CFA planes" in info.training["noise"]
    assert model.conditional and model.config.noise_inputs == 2  # the exported model builds its NLF planes
    out = model(torch.rand(1, 1, 32, 32), (1e-3, 1e-5))
    assert out.shape == (1, 1, 32, 32)


def test_init_starts_a_new_run_from_trained_weights(tmp_path: Path, data: Path) -> None:
    first = train(_cfg(tmp_path, data, "a", noise="nlf"))
    trained = load(first)["model"]
    cfg = _cfg(tmp_path, data, "b", steps=1, lr=1e-12, init=str(first), val=None)
    last = train(cfg)
    state = load(last)
    assert state["step"] == 1 and state["train_config"]["init"] == str(first)
    assert export_run(last, "b")[1].training["init"] == str(first)  # the manifest says what it was tuned from
    for k, v in trained.items():  # one step at a negligible rate: still the initial weights
        if v.is_floating_point() and "running" not in k:
            assert torch.allclose(state["model"][k], v, atol=1e-6), k
    # the weights must fit: a different width is refused with a message
    from n3cli.train.trainer import build_model

    wrong = build_model(TrainConfig(out="x", data=[], model={**TINY, "features": 16}), 3)
    with pytest.raises(N3Error, match="does not fit"):
        load_initial_weights(wrong, first)


def test_init_cli_errors(tmp_path: Path, data: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--init",
                              str(tmp_path / "missing.pt"), "--steps", "1"])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--init",
                              str(tmp_path / "missing.pt"), "--resume"])
    assert res.exit_code == 2 and "--resume" in res.output


def test_raw_task_falls_back_to_the_default_denoiser() -> None:
    reg = {"default": {"denoise": "n3net-nlf"}}
    assert default_name(reg, "raw") == "n3net-nlf"
    assert default_name({"default": {"denoise": "a", "raw": "b"}}, "raw") == "b"
    assert default_name(reg, "sr") is None
    assert setting_key("raw", (1e-3, 1e-5)) == "nlf=0.001,1e-05"
    assert setting_key("denoise", 25.0) == "sigma25" and setting_key("sr", 3) == "x3"


def test_raw_models_serve_raw_denoising_only(tmp_path: Path) -> None:
    from n3cli.nn.nets import n3net_light
    from n3cli.weights import save_weights

    model = n3net_light(in_channels=3, **TINY).eval()
    path = save_weights(tmp_path / "r.safetensors", model,
                        ModelInfo(name="r", task="raw", planes=["image", "sqrt_a", "sqrt_b"]))
    assert api.load_raw_model(path, "cpu").info.task == "raw"
    with pytest.raises(N3Error, match="for task 'raw'"):
        api.load_model(path, "denoise", "cpu")
    mosaic = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    out = api.denoise_mosaic(mosaic, "RGGB", (1e-3, 1e-5), model=path, device="cpu")
    assert out.shape == mosaic.shape and np.isfinite(out).all()
    assert json.loads(json.dumps(setting_key("raw", (4e-3, 4e-5))))
