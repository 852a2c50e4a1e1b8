"""The colour / real-photo task: batches, validation on real pairs, and a colour model started from a gray one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from n3cli.errors import N3Error
from n3cli.nn.nets import n3net, n3net_light
from n3cli.train.tasks import RealColorTask, RealSpec, real_pairs, task_for
from n3cli.train.widen import color_from_gray

pytest.importorskip("colour_demosaicing")


def test_real_spec_text() -> None:
    assert RealSpec.parse("real") == RealSpec()
    assert RealSpec.parse("real:camera=0.25,known=1") == RealSpec(camera_fraction=0.25, known_fraction=1.0)
    assert RealSpec.parse("real:nr=0.8").nr_fraction == 0.8
    assert "noise reduction" in RealSpec(nr_fraction=0.8).describe()
    assert RealSpec.parse("real:nrmix=0.6").nr_mixed_fraction == 0.6
    assert "mixed-scale" in RealSpec(nr_mixed_fraction=0.6).describe()
    assert RealSpec.parse("real:blindmax=5").blind_sigma_max == 5.0
    assert [RealSpec.parse(f"real:blindmax={v}").blind_sigma_max for v in (0, 75)] == [0.0, 75.0]
    with pytest.raises(ValueError, match="blindmax"):
        RealSpec(blind_sigma_max=80.0)
    assert "when withheld" in RealSpec(blind_sigma_max=5.0).describe()
    assert "withheld" not in RealSpec().describe()
    for bad in ("real:camera=2", "real:foo=0.1", "real:", "real:blindmax=80", "real:blindmax=-1"):
        with pytest.raises(ValueError):
            RealSpec.parse(bad)
    with pytest.raises(N3Error, match="--noise"):
        task_for("denoise", "real:camera=x", 80)
    assert isinstance(task_for("denoise", "real", 80), RealColorTask)


def test_real_batches_mix_camera_and_gaussian_noise_with_levels_given_or_not() -> None:
    task = RealColorTask(RealSpec(camera_fraction=0.5, known_fraction=0.5))
    assert (task.channels, task.noise_inputs, task.in_planes) == (3, 3, 6)
    assert task.plane_names == ["red", "green", "blue", "sqrt_a", "sqrt_b", "known"]
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(64, 3, 32, 32) * 0.6 + 0.2
    batch = task.batch(clean, gen)
    assert batch.x.shape == clean.shape and torch.equal(batch.target, clean)
    known = batch.noise[:, 2]
    assert set(known.tolist()) <= {0.0, 1.0} and 0 < known.sum() < 64
    assert torch.equal(batch.noise[known == 0, :2], torch.zeros(int((known == 0).sum()), 2))  # withheld: zero
    sigma = batch.noise[known == 1, 1].sqrt() * 255  # a given level is the noise's own σ
    measured = (batch.x - clean)[known == 1].flatten(1).std(dim=1) * 255
    assert torch.allclose(measured, sigma, rtol=0.15, atol=0.5)
    w = task.loss_weights(batch)
    assert w.shape == (64,) and bool((w > 0).all())


def test_blindmax_caps_only_the_gaussian_samples_whose_level_is_withheld() -> None:
    clean = torch.rand(256, 3, 16, 16) * 0.6 + 0.2
    spec = RealSpec(camera_fraction=0.0, known_fraction=0.5)
    plain = RealColorTask(spec).batch(clean, torch.Generator().manual_seed(3))
    capped = RealColorTask(RealSpec(camera_fraction=0.0, known_fraction=0.5, blind_sigma_max=5.0)).batch(
        clean, torch.Generator().manual_seed(3))
    known = plain.noise[:, 2] == 1
    assert torch.equal(capped.noise, plain.noise)  # the same draws: levels and which are given
    assert torch.equal(capped.x[known], plain.x[known])
    sd = ((capped.x - clean)[~known].flatten(1).std(dim=1) * 255)
    assert float(sd.max()) < 5.5 and float(((plain.x - clean)[~known].flatten(1).std(dim=1) * 255).max()) > 20


def _pairs(folder: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        clean = rng.integers(40, 200, (300, 280, 3), dtype=np.uint8)
        noisy = np.clip(clean + rng.normal(0, 5, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(folder / f"cam_{i}_mean.png")
        Image.fromarray(noisy).save(folder / f"cam_{i}_real.png")
    Image.fromarray(noisy).save(folder / "lonely_real.png")  # no clean partner: not a pair
    return folder


def test_validation_on_real_pairs_is_blind_on_central_crops(tmp_path: Path) -> None:
    folder = _pairs(tmp_path)
    assert [p[0].name for p in real_pairs(folder)] == ["cam_0_real.png", "cam_1_real.png"]
    val = RealColorTask(RealSpec()).validation(str(folder), 5, 25.0)
    assert val.fields == {"val_sigma": None, "val_real": 2} and val.quantize
    (noisy, level), clean, border = val.items[0]
    assert level is None and noisy.shape == clean.shape == (1, 3, 256, 256) and border == 0

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor, noise: object = None) -> torch.Tensor:
            return x

    psnr = val(Identity(), torch.device("cpu"))
    assert 33.0 < psnr < 36.0  # the noisy crops themselves (σ 5: 34.2 dB)


def test_a_colour_model_starts_as_the_gray_model_on_gray_images() -> None:
    torch.manual_seed(0)
    gray = n3net(in_channels=3, noise_inputs=2, depth=3, features=8, embed_features=8).eval()
    color = n3net(in_channels=6, out_channels=3, noise_inputs=3, depth=3, features=8, embed_features=8,
                  inter_channels=11).eval()
    color_from_gray(gray.state_dict(), color)
    x = torch.rand(2, 1, 37, 45)
    level = torch.tensor([[0.0, (25 / 255) ** 2], [1e-3, 1e-5]])
    with torch.no_grad():
        want = gray(x, level)
        got = color(x.expand(-1, 3, -1, -1), torch.cat([level, torch.ones(2, 1)], dim=1))
    assert torch.allclose(got, want.expand(-1, 3, -1, -1), atol=1e-5)
    wrong = n3net(in_channels=6, out_channels=3, noise_inputs=3, depth=3, features=8, embed_features=8)
    with pytest.raises(ValueError, match="inter_channels = 11"):
        color_from_gray(gray.state_dict(), wrong)
    light = n3net_light(in_channels=1, depth=3, features=8, embed_features=8)  # not conditional
    with pytest.raises(ValueError, match="gray noise-level-conditional"):
        color_from_gray(light.state_dict(), color)


def test_blind_floor_changes_only_the_weights_of_samples_trained_blind() -> None:
    from n3cli.train.tasks import NMSE_REF

    task = RealColorTask(RealSpec(camera_fraction=0.0, known_fraction=0.5))
    batch = task.batch(torch.rand(64, 3, 16, 16) * 0.6 + 0.2, torch.Generator().manual_seed(1))
    known = batch.noise[:, 2] == 1
    assert known.any() and (~known).any()
    floor, blind = (10 / 255) ** 2, (25 / 255) ** 2
    plain, floored = task.loss_weights(batch, floor), task.loss_weights(batch, floor, blind)
    assert torch.equal(floored[known], plain[known])
    v = (batch.x - batch.target).square().mean(dim=(1, 2, 3))
    assert torch.allclose(floored[~known], NMSE_REF / (v[~known] + blind))
    assert bool((floored[~known] < plain[~known]).all())  # a higher floor: every blind sample weighs less
    assert torch.equal(task.loss_weights(batch, floor, None), plain)
