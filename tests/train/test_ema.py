"""The moving average of the weights (n3 train --ema, n3 weights export --ema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from n3cli.errors import N3Error
from n3cli.train.checkpoint import load
from n3cli.train.ema import WeightAverage
from n3cli.train.trainer import train

from .conftest import tiny_config
from .test_train import data  # noqa: F401  (fixture)


def test_average_follows_the_formula() -> None:
    """θ_avg ← d·θ_avg + (1 - d)·θ with d = min(decay, (1 + n) / (10 + n)); buffers are the model's."""
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    avg = WeightAverage(net, decay=0.5)
    expected = [p.detach().clone() for p in net.parameters()]
    for n in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0 + n)
        d = min(0.5, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, net.parameters(), strict=True)]
        avg.update(net)
    assert avg.updates == 4
    for e, a in zip(expected, avg.module.parameters(), strict=True):
        torch.testing.assert_close(a, e)
    with torch.no_grad():
        net[1].running_mean.fill_(3.0)
    assert torch.equal(avg.averaged(net)[1].running_mean, torch.full((2,), 3.0))
    assert all(not p.requires_grad for p in avg.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 1.0)


def test_run_keeps_validates_and_resumes_the_average(tmp_path: Path, data: Path) -> None:  # noqa: F811
    """Stored in every checkpoint, validated beside the weights, and bit-identical after a kill and resume."""
    records: list[dict] = []
    full = train(tiny_config(tmp_path / "a", data, steps=6, ema=0.9, eval_every=3, precise_bn=2),
                 on_log=records.append)
    vals = [r for r in records if "val_psnr" in r]
    assert vals and all("val_psnr_ema" in r and 0 < r["ema_decay"] <= 0.9 for r in vals)
    part = tiny_config(tmp_path / "b", data, steps=6, ema=0.9, eval_every=3, precise_bn=2)
    train(part, stop_after=4)
    resumed = train(tiny_config(tmp_path / "b", data, steps=6, ema=0.9, eval_every=3, precise_bn=2), resume=True)
    a, b = load(full), load(resumed)
    assert a["ema_updates"] == b["ema_updates"] == 6
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert any(not torch.equal(a["ema"][k], a["model"][k]) for k in a["model"] if k.endswith("weight"))
    with pytest.raises(N3Error, match="--ema must be"):
        train(tiny_config(tmp_path / "c", data, steps=1, ema=1.0))


def test_switched_on_at_resume_and_exported(tmp_path: Path, data: Path) -> None:  # noqa: F811
    from n3cli.train.export import export_run
    from n3cli.weights import WeightsError

    cfg = tiny_config(tmp_path, data, steps=4, val=None, noise="nlf")
    train(cfg, stop_after=2)
    with pytest.raises(WeightsError, match="no weight average"):
        export_run(Path(cfg.out) / "last.pt", "x", precise_bn=2, ema=True)
    last = train(tiny_config(tmp_path, data, steps=4, val=None, noise="nlf"), resume=True, ema=0.99)
    state = load(last)
    assert state["train_config"]["ema"] == 0.99 and state["ema_updates"] == 2
    with pytest.raises(WeightsError, match="precise-bn"):
        export_run(last, "x", ema=True)
    model, info = export_run(last, "x", precise_bn=2, ema=True)
    exported = model.state_dict()
    assert all(torch.equal(exported[k], state["ema"][k]) for k in exported
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert info.training["weights"] == "moving average, decay 0.99, 2 updates"
    json.dumps(info.training)


def test_command_line(tmp_path: Path, data: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from n3cli.cli.app import app

    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--arch", "vdsr", "--model", "depth=3",
                              "--model", "features=8", "--patch", "32", "--batch-size", "2", "--steps", "2",
                              "--threads", "1", "--ema", "0.9"])
    assert res.exit_code == 0, res.output
    assert load(out / "last.pt")["ema_updates"] == 2
    res = runner.invoke(app, ["weights", "export", str(out / "last.pt"), "-o", str(tmp_path / "m.safetensors"),
                              "--name", "m", "--ema", "--precise-bn", "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "moving average, decay 0.9, 2 updates" in res.output
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--ema", "2"])
    assert res.exit_code != 0 and "--ema must be" in res.output
