"""n3 weights export --bn-noise: the BN statistics of the exported model recomputed from another noise of the
run's kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from n3cli.train.export import export_run
from n3cli.train.trainer import train
from n3cli.weights import WeightsError

from .conftest import tiny_config
from .test_train import data  # noqa: F401  (fixture)


def _bn_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}


def test_calibration_noise_is_used_and_recorded(tmp_path: Path, data: Path) -> None:  # noqa: F811
    last = train(tiny_config(tmp_path, data, steps=2, val=None, noise="nlf:0.5"))
    own, own_info = export_run(last, "x", precise_bn=2)
    again, _ = export_run(last, "x", precise_bn=2, bn_noise="nlf:0.5")  # the run's own noise: the same batches
    strong, info = export_run(last, "x", precise_bn=2, bn_noise="nlf:1,sigma=60-75")
    assert all(torch.equal(a, b) for a, b in zip(_bn_stats(own).values(), _bn_stats(again).values(), strict=True))
    # stronger noise gives the first BN layers larger variances; the weights are untouched
    first = next(k for k in _bn_stats(own) if k.endswith("running_var"))
    assert _bn_stats(strong)[first].mean() > _bn_stats(own)[first].mean()
    for k, v in own.state_dict().items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(v, strong.state_dict()[k]), k
    assert "precise_bn_noise" not in own_info.training
    assert "σ" in info.training["precise_bn_noise"] and info.training["noise"] == own_info.training["noise"]


def test_refused_before_any_work(tmp_path: Path, data: Path) -> None:  # noqa: F811
    last = train(tiny_config(tmp_path, data, steps=1, val=None, noise="nlf:0.5"))
    with pytest.raises(WeightsError, match="precise-bn"):
        export_run(last, "x", precise_bn=0, bn_noise="nlf:1")
    with pytest.raises(WeightsError, match="not a noise of the run's kind"):
        export_run(last, "x", precise_bn=2, bn_noise="25")  # a fixed-σ model has other input planes
    with pytest.raises(WeightsError, match="--bn-noise"):
        export_run(last, "x", precise_bn=2, bn_noise="nlf:7")


def test_command_line(tmp_path: Path, data: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from n3cli.cli.app import app

    last = train(tiny_config(tmp_path, data, steps=1, val=None, noise="nlf:0.5"))
    runner = CliRunner()
    out = tmp_path / "m.safetensors"
    args = ["weights", "export", str(last), "-o", str(out), "--name", "m", "--precise-bn", "1", "--threads", "1"]
    res = runner.invoke(app, [*args, "--bn-noise", "real"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()
    res = runner.invoke(app, [*args, "--bn-noise", "nlf:1"])
    assert res.exit_code == 0, res.output
    assert "precise_bn_noise" in res.output and out.exists()
