"""Frozen BN (``freeze_bn``): training normalises with the stored statistics, which never change."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from n3cli.errors import N3Error
from n3cli.nn.n3 import DistanceNorm
from n3cli.nn.nets import n3net
from n3cli.train.checkpoint import load
from n3cli.train.export import export_run
from n3cli.train.frozen_bn import FrozenBatchNorm2d, freeze_batchnorm
from n3cli.train.precise_bn import recalibrate_bn
from n3cli.train.trainer import train
from n3cli.weights import WeightsError

from .conftest import TINY, tiny_config
from .test_train import data  # noqa: F401  (fixture)


def _stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def _tiny_with_statistics() -> torch.nn.Module:
    torch.manual_seed(0)
    model = n3net(**TINY)
    recalibrate_bn(model, [torch.rand(2, 1, 24, 24) for _ in range(2)])  # statistics other than 0 / 1
    return model


def test_train_mode_computes_the_eval_function_and_keeps_the_statistics() -> None:
    model = _tiny_with_statistics()
    reference = copy.deepcopy(model).eval()
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d | DistanceNorm) for m in model.modules())
    assert freeze_batchnorm(model) == n_bn > 0
    assert freeze_batchnorm(model) == 0  # idempotent
    assert model.state_dict().keys() == reference.state_dict().keys()
    before = _stats(model)
    x = torch.rand(2, 1, 24, 24)
    model.train()
    out = model(x)
    torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-6)
    bn = next(m for m in model.modules() if isinstance(m, FrozenBatchNorm2d))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out.square().mean().backward()
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0  # the affine part still trains
    opt.step()
    model(x)
    assert all(torch.equal(before[k], v) for k, v in _stats(model).items())
    assert recalibrate_bn(model, [torch.rand(2, 1, 24, 24)]) == 0  # precise BN leaves frozen layers alone
    assert all(torch.equal(before[k], v) for k, v in _stats(model).items())


def test_frozen_run_keeps_its_init_statistics(tmp_path: Path, data: Path) -> None:  # noqa: F811
    base = train(tiny_config(tmp_path / "base", data, steps=2, val=None))
    init_stats = {k: v for k, v in load(base)["model"].items() if "running" in k}
    last = train(tiny_config(tmp_path / "frozen", data, steps=3, init=str(base), freeze_bn=True, ema=0.9))
    state = load(last)
    for k, v in init_stats.items():
        assert torch.equal(state["model"][k], v), k
        assert torch.equal(state["ema"][k], v), k
    assert init_stats and not torch.equal(state["model"]["blocks.0.conv1.weight"],
                                          load(base)["model"]["blocks.0.conv1.weight"])  # the rest trained
    model, info = export_run(last, "x", ema=True)  # no recomputation needed, nor allowed
    assert all(torch.equal(model.state_dict()[k], v) for k, v in init_stats.items())
    assert "fixed" in info.training["bn_statistics"]
    with pytest.raises(WeightsError, match="freeze_bn"):
        export_run(last, "x", precise_bn=2)
    with pytest.raises(N3Error, match="init"):
        tiny_config(tmp_path / "no-init", data, freeze_bn=True).validate()
    plain = train(tiny_config(tmp_path / "plain", data, steps=1, val=None, ema=0.9))
    with pytest.raises(WeightsError, match="precise-bn"):  # an unfrozen run's average still needs its statistics
        export_run(plain, "x", ema=True)


def test_command_line_default_keeps_the_statistics(tmp_path: Path, data: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from n3cli.cli.app import app

    base = train(tiny_config(tmp_path / "base", data, steps=1, val=None))
    last = train(tiny_config(tmp_path / "frozen", data, steps=1, val=None, init=str(base), freeze_bn=True))
    out = tmp_path / "m.safetensors"
    args = ["weights", "export", str(last), "-o", str(out), "--name", "m", "--threads", "1"]
    res = CliRunner().invoke(app, [*args, "--precise-bn", "3"])
    assert res.exit_code == 2 and "freeze_bn" in res.output and not out.exists(), res.output
    res = CliRunner().invoke(app, args)  # the default: the statistics the run kept
    assert res.exit_code == 0 and out.exists(), res.output
