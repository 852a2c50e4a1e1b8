"""Run files: `n3 train --config run.toml` and `--set` give the run the flags give, bit for bit; old checkpoints
(conditioning planes built outside the model) resume and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from n3cli.cli.app import app
from n3cli.errors import N3Error
from n3cli.train.checkpoint import load, save_atomic
from n3cli.train.config import TrainConfig, parse_sets, read_config, to_toml
from n3cli.train.export import export_run
from n3cli.train.trainer import train
from n3cli.weights import save_weights

from .conftest import tiny_config
from .test_train import data  # noqa: F401  (fixture)

#: The settings of a tiny conditional run, as flags of their own, as a run file and as --set items.
FLAGS = ["--noise", "nlf", "--patch", "32", "--batch-size", "2", "--model", "depth=3", "--model", "features=8",
         "--model", "embed-features=8", "--val-limit", "1", "--eval-every", "2", "--log-every", "1",
         "--precision", "fp32", "--precise-bn", "1", "--loss", "nmse"]
TOML = """noise = "nlf"
patch = 32
batch_size = 2
val_limit = 1
eval_every = 2
log_every = 1
precision = "fp32"
precise_bn = 1
loss = "nmse"

[model]
depth = 3
features = 8
embed_features = 8
"""
SETS = ["noise=nlf", "patch=32", "batch_size=2", "model.depth=3", "model.features=8", "model.embed_features=8",
        "val_limit=1", "eval_every=2", "log_every=1", "precision=fp32", "precise_bn=1", "loss=nmse"]


def _invoke(*args: str) -> None:
    res = CliRunner().invoke(app, ["train", "--threads", "1", *args])
    assert res.exit_code == 0, res.output


def _run_facts(out: Path) -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """Weights and the logged losses, rates and validation PSNRs of a run (not its timings)."""
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return load(out / "last.pt")["model"], [(r["step"], r.get("loss"), r.get("lr"), r.get("val_psnr")) for r in records]


def test_run_file_and_set_reproduce_the_flags_bit_for_bit(tmp_path: Path, data: Path) -> None:  # noqa: F811
    common = ["--data", str(data), "--val", str(data), "--steps", "3"]
    (tmp_path / "run.toml").write_text(TOML)
    _invoke(*common, "--out", str(tmp_path / "flags"), *FLAGS)
    _invoke(*common, "--out", str(tmp_path / "file"), "--config", str(tmp_path / "run.toml"))
    _invoke(*common, "--out", str(tmp_path / "set"), *(a for s in SETS for a in ("--set", s)))
    weights, log = _run_facts(tmp_path / "flags")
    assert len([r for r in log if r[1] is not None]) == 3 and any(r[3] is not None for r in log)
    for other in ("file", "set"):
        w, lg = _run_facts(tmp_path / other)
        assert lg == log, other
        for key in weights:
            assert torch.equal(weights[key], w[key]), (other, key)
    configs = [json.loads((tmp_path / o / "config.json").read_text()) for o in ("flags", "file", "set")]
    assert all({**c, "out": ""} == {**configs[0], "out": ""} for c in configs)
    # a run's own config.json is a run file too
    _invoke("--config", str(tmp_path / "flags" / "config.json"), "--out", str(tmp_path / "again"))
    assert _run_facts(tmp_path / "again")[1] == log


def test_toml_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = TrainConfig(out="runs/x", data=["a", "b"], noise="nlf:0.6", lr=9.686e-4, ema=0.999, model={"depth": 10})
    (tmp_path / "run.toml").write_text(to_toml(cfg))
    assert TrainConfig.from_dict(read_config(tmp_path / "run.toml")) == cfg
    assert cfg.with_overrides(steps=5, weight_decay=0).weight_decay == 0.0
    assert parse_sets(["noise=25", "lr=1e-4", "model.bn=false", "init=none"]) == {
        "noise": "25", "lr": 1e-4, "model": {"bn": False}, "init": None}
    for bad, why in ((["depth=3"], "unknown setting"), (["model.width=3"], "unknown key"), (["lr"], "KEY=VALUE"),
                     (["steps=many"], "not a valid value")):
        with pytest.raises(N3Error, match=why):
            parse_sets(bad)
    (tmp_path / "bad.toml").write_text("stpes = 3\n")
    with pytest.raises(N3Error, match="stpes"):
        TrainConfig.from_dict({"out": "x", "data": [], **read_config(tmp_path / "bad.toml")})


def test_resume_switches_and_fixed_settings(tmp_path: Path, data: Path) -> None:  # noqa: F811
    out = tmp_path / "run"
    (tmp_path / "run.toml").write_text(TOML)
    _invoke("--data", str(data), "--out", str(out), "--steps", "3", "--config", str(tmp_path / "run.toml"))
    (tmp_path / "other.toml").write_text(f'data = ["{tmp_path / "elsewhere"}"]\n' + TOML)
    _invoke("--out", str(out), "--resume", "--steps", "4", "--set", "lr=1e-5", "--config", str(tmp_path / "other.toml"))
    state = load(out / "last.pt")
    assert state["step"] == 4 and state["train_config"]["lr"] == 1e-5
    assert state["train_config"]["data"] == [str(data)]  # a run file's data does not re-point a resumed run
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--resume", "--set", "patch=40"])
    assert res.exit_code == 2 and "--resume" in res.output and "patch" in res.output
    # the noise mix may change within its kind (the model's planes stay), not across kinds
    _invoke("--out", str(out), "--resume", "--steps", "5", "--set", "noise=nlf:0.8")
    assert load(out / "last.pt")["train_config"]["noise"] == "nlf:0.8"
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--resume", "--steps", "6", "--set", "noise=25"])
    assert res.exit_code == 2 and "noise" in res.output and "Traceback" not in res.output


def test_resume_keeps_the_validation_of_fixed_sigma_and_sr_runs(tmp_path: Path) -> None:
    """A per-σ run validates at its σ (its best score would not compare) and SR has no noise: neither switches."""
    import dataclasses

    from n3cli.train.trainer import resume_config

    fixed = dataclasses.asdict(TrainConfig(out="x", data=[], noise="25"))
    assert resume_config(fixed, tmp_path, 3, {"noise": "gaussian:25", "steps": 9}).steps == 9
    with pytest.raises(N3Error, match="noise"):
        resume_config(fixed, tmp_path, 3, {"noise": "50"})
    sr = dataclasses.asdict(TrainConfig(out="x", data=[], task="sr"))
    with pytest.raises(N3Error, match="noise"):
        resume_config(sr, tmp_path, 3, {"noise": "nlf:0.8"})


def test_old_checkpoints_resume_and_export_with_noise_inputs(tmp_path: Path, data: Path) -> None:  # noqa: F811
    """A conditional checkpoint from before the model built its noise planes (net_config: in_channels 3, no
    noise_inputs) resumes bit for bit and exports a model that takes its noise level."""
    full = train(tiny_config(tmp_path / "a", data, noise="nlf", val=None))
    part = tiny_config(tmp_path / "b", data, noise="nlf", val=None)
    last = train(part, stop_after=2)
    state = load(last)
    assert state["net_config"]["noise_inputs"] == 2 and state["net_config"]["in_channels"] == 3
    del state["net_config"]["noise_inputs"]
    save_atomic(state, last)
    resumed = train(part, resume=True)
    a, b = load(full)["model"], load(resumed)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    del (old := load(resumed))["net_config"]["noise_inputs"]
    save_atomic(old, tmp_path / "old.pt")
    model, info = export_run(tmp_path / "old.pt", "old")
    assert model.config.noise_inputs == 2 and info.conditional
    assert model(torch.rand(1, 1, 16, 16), (0.0, 0.01)).shape == (1, 1, 16, 16)
    save_weights(tmp_path / "old.safetensors", model, info)
    with safe_open(str(tmp_path / "old.safetensors"), framework="pt") as fh:
        assert json.loads(fh.metadata()["n3_config"])["noise_inputs"] == 2


def test_the_example_run_file_is_the_shipped_denoisers_run() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "denoise-nlf.toml"
    cfg = TrainConfig.from_dict({"out": "runs/x", **read_config(example)})
    cfg.validate()
    assert (cfg.noise, cfg.optimizer, cfg.schedule, cfg.lr, cfg.ema, cfg.steps, cfg.model) == (
        "nlf:0.6", "adamw", "cosine", 0.0009686, 0.999, 75000, {})
