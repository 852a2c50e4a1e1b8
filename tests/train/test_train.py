"""n3 train: a few steps of each task and architecture on tiny data, resume, distributed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from n3cli.errors import N3Error
from n3cli.train.checkpoint import load
from n3cli.train.config import TrainConfig
from n3cli.train.optim import learning_rate, param_groups
from n3cli.train.tasks import NoiseSpec, denoise_batch, sr_batch
from n3cli.train.trainer import train

from .conftest import TINY, tiny_config


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        y, x = np.mgrid[0:48, 0:52]
        img = (127 + 60 * np.sin(x / (3 + i)) + rng.normal(0, 10, x.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "rgb.png")
    return folder


def _cfg(tmp_path: Path, data: Path, *, out: str | None = None, **kw: object) -> TrainConfig:
    return tiny_config(Path(out) if out else tmp_path / "run", data, **kw)


@pytest.mark.parametrize("precision,expected", [("bf16", False), ("bf16-all", True), ("fp32", False)])
def test_precision_bf16_all_runs_the_n3_cnns_in_bf16(tmp_path: Path, data: Path, precision: str,
                                                     expected: bool) -> None:
    from n3cli.nn.n3 import N3Block2d
    from n3cli.train.trainer import Trainer

    trainer = Trainer(_cfg(tmp_path, data, arch="n3net", noise="25", patch=32, precision=precision), resume=False)
    flags = {m.bf16_cnns_in_training for m in trainer.model.modules() if isinstance(m, N3Block2d)}
    assert flags == {expected}


@pytest.mark.parametrize("arch,task,noise,precision", [
    ("n3net", "denoise", "25", "fp32"), ("n3net-light", "denoise", "nlf", "fp32"), ("dncnn", "denoise", "nlf", "fp32"),
    ("knn", "denoise", "15", "fp32"), ("n3net-sr", "sr", "25", "fp32"), ("vdsr", "sr", "25", "fp32"),
    ("n3net", "denoise", "nlf", "bf16"), ("n3net", "denoise", "nlf", "bf16-all")])
def test_few_steps(tmp_path: Path, data: Path, arch: str, task: str, noise: str, precision: str) -> None:
    records: list[dict] = []
    cfg = _cfg(tmp_path, data, arch=arch, task=task, noise=noise, patch=36 if task == "sr" else 32,
               precision=precision)
    last = train(cfg, on_log=records.append)
    state = load(last)
    assert state["step"] == 4
    assert any("val_psnr" in r and np.isfinite(r["val_psnr"]) for r in records)
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert (tmp_path / "run" / "log.jsonl").exists() and (tmp_path / "run" / "best.pt").exists()


def test_resume_reaches_the_same_weights(tmp_path: Path, data: Path) -> None:
    """Killed after 3 steps and resumed: bit-identical to an uninterrupted run with the same seed."""
    full = train(_cfg(tmp_path / "a", data, steps=6, val=None))
    part = _cfg(tmp_path / "b", data, steps=6, val=None)
    train(part, stop_after=3)
    assert load(Path(part.out) / "last.pt")["step"] == 3
    resumed = train(_cfg(tmp_path / "b", data, steps=6, val=None), resume=True)
    a, b = load(full)["model"], load(resumed)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_drops_log_records_past_the_checkpoint(tmp_path: Path, data: Path) -> None:
    """Killed after logging steps its checkpoint does not hold: the resumed log shows each step once."""
    import shutil

    cfg = _cfg(tmp_path, data, steps=6, val=None)
    run = Path(cfg.out)
    train(cfg, stop_after=3)
    shutil.copy(run / "last.pt", tmp_path / "at3.pt")
    train(cfg, resume=True, stop_after=2)  # logs steps 4 and 5 ...
    shutil.copy(tmp_path / "at3.pt", run / "last.pt")  # ... but the kill came before their checkpoint
    with (run / "log.jsonl").open("a") as fh:
        fh.write('{"step": 5, "lo')  # and cut the last line short
    train(cfg, resume=True)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_refuses_to_overwrite_a_run(tmp_path: Path, data: Path) -> None:
    cfg = _cfg(tmp_path, data, steps=1, val=None)
    train(cfg)
    with pytest.raises(N3Error, match="--resume"):
        train(cfg)


def test_bad_config(tmp_path: Path, data: Path) -> None:
    with pytest.raises(N3Error):
        train(_cfg(tmp_path, data, arch="resnet"))
    with pytest.raises(N3Error):
        train(_cfg(tmp_path, tmp_path / "nope"))


def test_schedules() -> None:
    cfg = TrainConfig(out="x", data=[], steps=100)
    assert learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 100) == pytest.approx(1e-8)
    sr = TrainConfig(out="x", data=[], steps=100, task="sr")
    assert [learning_rate(sr, s) for s in (0, 26, 51, 76)] == pytest.approx([0.1, 0.01, 0.001, 0.0001])
    cos = TrainConfig(out="x", data=[], steps=100, schedule="cosine")
    assert learning_rate(cos, 50) == pytest.approx(0.5e-3, rel=0.01)


def test_weight_decay_only_on_conv_weights_and_bn_scales() -> None:
    from n3cli.nn.nets import n3net

    model = n3net(**TINY)
    decay, no_decay = param_groups(model, 1e-4)
    ids = {id(p) for p in decay["params"]}
    for name, p in model.named_parameters():
        expected = name.endswith("weight")  # conv weights and every BN scale (the distance BN too)
        assert (id(p) in ids) == expected, name
    assert no_decay["weight_decay"] == 0


def test_conditional_noise_batch() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(64, 1, 16, 16, generator=g)
    x, levels, target = denoise_batch(clean, NoiseSpec.parse("nlf"), g)
    assert x.shape == (64, 1, 16, 16) and levels.shape == (64, 2) and target.shape == clean.shape
    gauss = levels[:, 0] == 0  # a = 0 for Gaussian samples
    assert 10 < int(gauss.sum()) < 54
    torch.testing.assert_close(target[gauss], clean[gauss])
    assert (x[~gauss, 0] >= 0).all() and (x[~gauss, 0] <= 1).all()  # raw-like samples are clipped


def test_conditional_noise_with_a_sigma_range() -> None:
    """'nlf:1,sigma=25': a conditional model fine-tuned at one Gaussian level, that level given (issue #51)."""
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(32, 1, 16, 16, generator=g)
    x, levels, target = denoise_batch(clean, NoiseSpec.parse("nlf:1,sigma=25"), g)
    assert (levels[:, 0] == 0).all()
    torch.testing.assert_close(levels[:, 1], torch.full((32,), (25 / 255) ** 2))
    torch.testing.assert_close(target, clean)
    assert abs(float((x - clean).std()) * 255 - 25) < 1.0
    spec = NoiseSpec.parse("nlf:0.6,sigma=15-35")
    assert (spec.sigma_min, spec.sigma_max, spec.gaussian_fraction) == (15.0, 35.0, 0.6)
    _, levels, _ = denoise_batch(clean, spec, g)
    sigmas = levels[levels[:, 0] == 0, 1].sqrt() * 255
    assert ((sigmas >= 15 - 1e-3) & (sigmas <= 35 + 1e-3)).all()
    assert NoiseSpec.parse("nlf") == NoiseSpec(None)  # the default range is unchanged: σ ~ U(0, 75)
    for bad in ("nlf:1,sigma=80", "nlf:1,sigma=30-20", "nlf:1,size=3", "nlf:1,sigma=", "nlf:1,sigma=1-2-3"):
        with pytest.raises(ValueError):
            NoiseSpec.parse(bad)


def test_sr_batch_shapes() -> None:
    g = torch.Generator().manual_seed(0)
    x, levels, y = sr_batch(torch.rand(6, 1, 84, 84, generator=g), 80, g)
    assert x.shape == y.shape == (6, 1, 80, 80) and levels is None


@pytest.mark.slow
def test_two_process_ddp(tmp_path: Path, data: Path) -> None:
    """A one-process run continued under two processes with half the batch each (the same crops per step)."""
    out = tmp_path / "ddp"
    train(TrainConfig(out=str(out), data=[str(data)], arch="dncnn", steps=4, batch_size=4, patch=32), stop_after=2)
    cpu_before = load(out / "last.pt")["cpu_seconds"]
    with socket.socket() as probe:  # a free port: a fixed one may be taken by another run of this test
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "n3cli", "train", "--data", str(data), "--out", str(out), "--resume", "--batch-size", "2",
           "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    # the ranks' own messages come before the launcher's summary: show them, not only the summary
    assert proc.returncode == 0, proc.stderr[:2500] + "\n[...]\n" + proc.stderr[-800:]
    assert "terminate called" not in proc.stderr  # no rank aborted in its exit (gloo without destroy_process_group)
    state = load(out / "last.pt")
    assert state["step"] == 4 and len(state["rng"]) == 2
    assert state["train_config"]["batch_size"] == 2
    assert state["cpu_seconds"] > cpu_before
    assert not torch.equal(state["rng"][0], state["rng"][1])  # each process draws its own crops


def test_cpu_budget_stops_the_run(tmp_path: Path, data: Path) -> None:
    """--budget-hours: the schedule follows the CPU time used and the run stops once it is spent."""
    cfg = _cfg(tmp_path, data, steps=10_000, val=None, budget_hours=1e-6)  # 3.6 ms of CPU
    state = load(train(cfg))
    assert 1 <= state["step"] < 10_000
    assert state["cpu_seconds"] >= 3.6e-3
    assert learning_rate(cfg, 0, cpu_seconds=3.6e-3) == pytest.approx(1e-8)


def test_validation_leaves_the_run_untouched(tmp_path: Path, data: Path) -> None:
    """Validation (with precise BN on a copy) inside the run: resumed = uninterrupted, bit for bit."""
    full = train(_cfg(tmp_path / "a", data, steps=6, precise_bn=2))
    part = _cfg(tmp_path / "b", data, steps=6, precise_bn=2)
    train(part, stop_after=3)
    resumed = train(_cfg(tmp_path / "b", data, steps=6, precise_bn=2), resume=True)
    a, b = load(full)["model"], load(resumed)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    best = load(tmp_path / "a" / "run" / "best.pt")["model"]  # the calibrated copy, not the running averages
    assert any(not torch.equal(best[k], a[k]) for k in a if k.endswith("running_mean"))


def test_resume_with_a_new_length(tmp_path: Path, data: Path) -> None:
    cfg = _cfg(tmp_path, data, steps=4, val=None)
    train(cfg, stop_after=2)
    with pytest.raises(N3Error, match="below the run's current step"):
        train(_cfg(tmp_path, data, steps=4, val=None), resume=True, steps=1)
    last = train(_cfg(tmp_path, data, steps=4, val=None), resume=True, steps=5, precision="bf16")
    state = load(last)
    assert state["step"] == 5 and state["train_config"]["steps"] == 5
    assert state["train_config"]["precision"] == "bf16"
    with pytest.raises(N3Error, match="unknown precision"):
        train(_cfg(tmp_path / "c", data, steps=1, val=None, precision="fp8"))


def test_resume_with_a_new_rate(tmp_path: Path, data: Path) -> None:
    """--resume --lr rescales the schedule from the current step on; the rate logged after it follows."""
    train(_cfg(tmp_path, data, steps=4, val=None, schedule="cosine", log_every=1), stop_after=2)
    with pytest.raises(N3Error, match="--lr must be positive"):
        train(_cfg(tmp_path, data, steps=4, val=None), resume=True, lr=0.0)
    with pytest.raises(N3Error, match="--lr must be positive"):
        train(_cfg(tmp_path / "new", data, steps=4, val=None, lr=-1e-3))
    last = train(_cfg(tmp_path, data, steps=4, val=None), resume=True, lr=1e-5)
    state = load(last)
    assert state["step"] == 4 and state["train_config"]["lr"] == 1e-5
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    rates = {r["step"]: r["lr"] for r in logged if "lr" in r}
    cfg = TrainConfig(**state["train_config"])
    assert rates[2] == pytest.approx(learning_rate(replace(cfg, lr=None), 1))  # before: the default 1e-3 curve
    assert rates[4] == pytest.approx(learning_rate(cfg, 3))  # after: the same curve from 1e-5


def test_export_recomputes_bn_statistics(tmp_path: Path, data: Path) -> None:
    from n3cli.train.export import export_run
    from n3cli.weights import WeightsError

    last = train(_cfg(tmp_path, data, steps=2, val=None, noise="nlf"))
    plain, info0 = export_run(last, "x")
    calibrated, info = export_run(last, "x", precise_bn=3)
    assert info0.training["precise_bn_batches"] == 0 and info.training["precise_bn_batches"] == 3
    assert info.planes == ["image", "sqrt_a", "sqrt_b"]
    assert info.training["optimizer"] == "adam" and info.training["weight_decay"] == 1e-4  # the recipe, stated
    s0, s1 = plain.state_dict(), calibrated.state_dict()
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if k.endswith("running_var"))
    assert all(torch.equal(s0[k], s1[k]) for k in s0 if not k.endswith(("running_var", "running_mean",
                                                                             "num_batches_tracked")))
    state = load(last)
    state["train_config"]["data"] = [str(tmp_path / "gone")]
    torch.save(state, tmp_path / "moved.pt")
    with pytest.raises(WeightsError, match="not found"):
        export_run(tmp_path / "moved.pt", "x", precise_bn=3)


def test_noise_normalised_weights() -> None:
    """nmse weights a sample by NMSE_REF / (its mean noise variance + floor): Gaussian σ gives σ², a raw-like
    sample a·mean(x) + b, from the batch's noise levels (as the model's NLF planes hold them)."""
    from n3cli.imaging import noise
    from n3cli.train.tasks import NMSE_FLOOR, NMSE_REF, sample_weights

    gen = torch.Generator().manual_seed(3)
    clean = torch.rand(64, 1, 16, 16, generator=gen)
    spec = NoiseSpec.parse("nlf")
    x, levels, target = denoise_batch(clean, spec, gen)
    w = sample_weights(levels, target, spec)
    a, b = levels[:, 0].double(), levels[:, 1].double()
    expected = NMSE_REF / (a * target.double().clamp(0, 1).mean(dim=(1, 2, 3)) + b + NMSE_FLOOR)
    assert torch.allclose(w.double(), expected, rtol=1e-4)
    gaussian = a == 0
    assert gaussian.any() and (~gaussian).any()  # both kinds of sample were drawn
    # equal-dB weighting: a sample twice as noisy (in σ) weighs about a quarter as much
    w2 = sample_weights(torch.tensor([noise.sigma_to_nlf(50.0), noise.sigma_to_nlf(25.0)]), clean[:2], spec)
    assert float(w2[1] / w2[0]) == pytest.approx(((50 / 255) ** 2 + NMSE_FLOOR) / ((25 / 255) ** 2 + NMSE_FLOOR))
    fixed = sample_weights(None, clean[:4], NoiseSpec(25.0))
    assert torch.allclose(fixed, torch.full((4,), NMSE_REF / (NMSE_REF + NMSE_FLOOR)))
    # a higher floor (nmse_floor) bounds the weight of nearly clean samples: σ 0 weighs as σ = the floor
    floor = (10 / 255) ** 2
    clean_w = sample_weights(torch.tensor([noise.sigma_to_nlf(0.0)]), clean[:1], spec, floor)
    assert float(clean_w[0]) == pytest.approx(NMSE_REF / floor, rel=1e-4)


def test_sr_weights_count_every_scale_alike() -> None:
    """SR nmse: a sample's weight is SR_NMSE_REF / (its bicubic input's MSE + floor), so the ×2 samples (small
    input errors) weigh more than the ×4 ones."""
    from n3cli.train.tasks import NMSE_FLOOR, SR_NMSE_REF, sr_sample_weights

    gen = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    hr = (0.5 + 0.4 * torch.sin(x / 2.0) * torch.cos(y / 3.0)).expand(6, 1, 48, 48).contiguous()
    inputs, targets = [], []
    for s in (2, 4):
        a, _, b = sr_batch(hr[:3], 40, gen, scales=(s,))
        inputs.append(a)
        targets.append(b)
    x_in, target = torch.cat(inputs), torch.cat(targets)
    w = sr_sample_weights(x_in, target)
    e = (x_in - target).square().mean(dim=(1, 2, 3))
    assert torch.allclose(w, SR_NMSE_REF / (e + NMSE_FLOOR))
    assert float(w[:3].min()) > 1.5 * float(w[3:].max())  # ×2 weighs more than ×4


def test_noise_normalised_loss_runs_and_switches_on_resume(tmp_path: Path, data: Path) -> None:
    with pytest.raises(N3Error, match="unknown loss"):
        train(_cfg(tmp_path / "x", data, loss="l1"))
    sr = train(_cfg(tmp_path / "y", data, task="sr", arch="vdsr", patch=36, loss="nmse", steps=2, val=None))
    assert load(sr)["train_config"]["loss"] == "nmse"
    records: list[dict] = []
    train(_cfg(tmp_path, data, noise="nlf", steps=4, val=None), stop_after=2)
    last = train(_cfg(tmp_path, data, noise="nlf", steps=4, val=None), resume=True, loss="nmse",
                 on_log=records.append)
    state = load(last)
    assert state["step"] == 4 and state["train_config"]["loss"] == "nmse"
    last = train(_cfg(tmp_path, data, noise="nlf", steps=5, val=None), resume=True, nmse_floor=10, steps=5)
    assert load(last)["train_config"]["nmse_floor"] == 10.0
    with pytest.raises(N3Error, match="nmse_floor"):
        train(_cfg(tmp_path / "z", data, loss="nmse", nmse_floor=0))
    with pytest.raises(N3Error, match="nmse_blind_floor applies to --noise real"):  # no sample is trained blind
        train(_cfg(tmp_path / "z", data, loss="nmse", nmse_blind_floor=25))
    with pytest.raises(N3Error, match="nmse_blind_floor must be"):
        train(_cfg(tmp_path / "z", data, noise="real", loss="nmse", nmse_blind_floor=0))
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)


def test_a_copied_run_continues_in_its_new_folder(tmp_path: Path, data: Path) -> None:
    import shutil

    train(_cfg(tmp_path, data, steps=4, val=None), stop_after=2)
    shutil.copytree(tmp_path / "run", tmp_path / "branch")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    last = train(_cfg(tmp_path, data, out=str(tmp_path / "branch"), steps=4, val=None), resume=True)
    assert last == tmp_path / "branch" / "last.pt" and load(last)["step"] == 4
    assert load(last)["train_config"]["out"] == str(tmp_path / "branch")
    assert json.loads((tmp_path / "branch" / "config.json").read_text())["out"] == str(tmp_path / "branch")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # the original run is untouched


def test_adamw_decays_weights_apart_from_the_gradient() -> None:
    """adam (the paper's) adds the L2 term to the gradient, which Adam then normalises: a weight without
    gradient moves by about the rate per step. adamw shrinks it by the factor (1 - rate * decay) only."""
    from n3cli.train.optim import make_optimizer

    moved = {}
    for name in ("adam", "adamw"):
        w = torch.nn.Parameter(torch.full((4,), 0.5, dtype=torch.float64))
        cfg = TrainConfig(out="x", data=[], optimizer=name, lr=1e-2, schedule="cosine")
        opt = make_optimizer(cfg, [{"params": [w], "weight_decay": 1e-4}])
        for _ in range(3):
            w.grad = torch.zeros_like(w)  # a silent channel: no gradient from the loss
            opt.step()
        moved[name] = 0.5 - float(w[0].detach())
    assert moved["adam"] == pytest.approx(3e-2, rel=1e-3)  # three steps of about the rate each
    assert moved["adamw"] == pytest.approx(0.5 * (1 - (1 - 1e-2 * 1e-4) ** 3), rel=1e-3)


def test_adamw_run_and_optimizer_switch_on_resume(tmp_path: Path, data: Path) -> None:
    with pytest.raises(N3Error, match="unknown optimizer"):
        train(_cfg(tmp_path / "x", data, optimizer="lion"))
    records: list[dict] = []
    last = train(_cfg(tmp_path / "w", data, optimizer="adamw", steps=2, eval_every=2), on_log=records.append)
    assert load(last)["train_config"]["optimizer"] == "adamw"
    val = [r for r in records if "val_psnr" in r]
    assert val and 0.0 <= val[0]["silent_channels"] <= 1.0
    train(_cfg(tmp_path, data, steps=4, val=None), stop_after=2)
    last = train(_cfg(tmp_path, data, steps=4, val=None), resume=True, optimizer="adamw")
    state = load(last)
    assert state["step"] == 4 and state["train_config"]["optimizer"] == "adamw"
    assert all(g["decoupled_weight_decay"] for g in state["optimizer"]["param_groups"])
    with pytest.raises(N3Error, match="between adam and adamw"):
        train(_cfg(tmp_path, data, steps=6, val=None), resume=True, optimizer="sgd")


def test_silent_channels() -> None:
    from n3cli.train.health import silent_channels, silent_fraction

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU())
    with torch.no_grad():
        net[1].bias[0] = -100.0  # this ReLU never opens
        net[0].weight[1].zero_()  # no variance left: a positive constant after BN + ReLU
        net[1].bias[1] = 1.0
    x = torch.rand(2, 1, 12, 12)
    net.train()
    assert silent_channels(net, x) == (2, 6)
    assert net.training  # the probe does not change the mode
    assert silent_fraction(net, x) == pytest.approx(2 / 6)
    assert np.isnan(silent_fraction(torch.nn.Conv2d(1, 1, 3), x))


def test_revive_silent_channels_keeps_the_output() -> None:
    from n3cli.nn.nets import dncnn
    from n3cli.train.health import revive_silent_channels, silent_by_layer

    torch.manual_seed(0)
    net = dncnn(depth=5, features=8).double()
    net.eval()
    layer = net.blocks[0].layer1
    with torch.no_grad():
        for bn in (layer[1], layer[4], layer[7]):
            bn.running_var.fill_(0.5)
        layer[1].bias[0] = -100.0  # silent at 0 (its consumer is the next conv, followed by BN)
        layer[7].bias[2] = -100.0  # silent at 0 (its consumer is the block's output conv, with bias)
    x = torch.rand(3, 1, 20, 20, dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(x).square().mean().backward()
    opt.step()
    with torch.no_grad():
        before = net(x)
    assert {k: v for k, v in silent_by_layer(net, x).items() if v[0]} == {"blocks.0.layer1.2": (1, 8),
                                                                          "blocks.0.layer1.8": (1, 8)}
    gen = torch.Generator().manual_seed(1)
    v_before = opt.state[net.blocks[0].conv2.weight]["exp_avg_sq"]
    v_live = torch.cat([v_before[:, :2], v_before[:, 3:]], dim=1).mean()  # channel 2 is the silent one
    revived = revive_silent_channels(net, x, gen, opt, gradient_batches=[(x, x.flip(-1))])
    assert revived == {"blocks.0.layer1.2": 1, "blocks.0.layer1.8": 1}
    v = opt.state[net.blocks[0].conv2.weight]["exp_avg_sq"]  # fresh weights: at least the live mean
    assert torch.all(v[:, 2] >= v_live * (1 - 1e-9)) and torch.any(v[:, 2] > v_live)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=0, atol=1e-12)  # a constant 0 sent nothing
    assert all(s == 0 for s, _ in silent_by_layer(net, x).values())
    assert torch.all(net.blocks[0].conv2.weight[:, 2] == 0) and torch.all(layer[3].weight[:, 0] == 0)
    assert torch.all(opt.state[layer[0].weight]["exp_avg"][0] == 0)
    assert torch.all(opt.state[layer[0].weight]["exp_avg"][1] != 0)  # live channels keep their moments

    with torch.no_grad():  # a channel stuck at a positive constant: its share moves to the consumer's BN mean
        layer[3].weight[5].zero_()
        layer[4].bias[5] = 0.3
        before = net(x)
        shifted = silent_by_layer(net, x)  # the new constant may close other ReLUs further on
    assert shifted["blocks.0.layer1.5"] == (1, 8)
    assert revive_silent_channels(net, x, gen) == {k: s for k, (s, _) in shifted.items() if s}
    with torch.no_grad():
        after = net(x)
    m = 3  # zero padding made the constant's share uneven within the consumer's reach of the border
    # (a channel counts as silent up to an output range of 1e-6, which it no longer sends on: atol 1e-8)
    torch.testing.assert_close(after[..., m:-m, m:-m], before[..., m:-m, m:-m], rtol=0, atol=1e-8)
    assert not torch.allclose(after, before)


def test_revive_on_resume_is_logged(tmp_path: Path, data: Path) -> None:
    cfg = _cfg(tmp_path, data, val=None)
    train(cfg, stop_after=2)
    records: list[dict] = []
    last = train(cfg, resume=True, revive=True, on_log=records.append)
    revived = [r for r in records if "revived" in r]
    assert len(revived) == 1 and revived[0]["step"] == 2
    assert revived[0]["revived"] == sum(revived[0]["revived_by_layer"].values())
    assert load(last)["step"] == 4


def test_model_overrides_on_the_command_line(tmp_path: Path, data: Path) -> None:
    from typer.testing import CliRunner

    from n3cli.cli.app import app
    from n3cli.cli.train import parse_overrides

    assert parse_overrides(["features=8", "bn=false", "selection=hard", "embed-features=4"]) == {
        "features": 8, "bn": False, "selection": "hard", "embed_features": 4}
    runner = CliRunner()
    base = ["train", "--data", str(data), "--patch", "32", "--batch-size", "2", "--steps", "1", "--threads", "1"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--arch", "vdsr", "--model", "depth=3",
                              "--model", "features=8", "--model", "bn=true", "--weight-decay", "0"])
    assert res.exit_code == 0, res.output
    state = load(tmp_path / "a" / "last.pt")
    assert state["train_config"]["weight_decay"] == 0
    assert all(g["weight_decay"] == 0 for g in state["optimizer"]["param_groups"])
    assert state["net_config"]["depth"] == 3 and state["net_config"]["features"] == 8 and state["net_config"]["bn"]
    for bad, why in ((["--model", "width=3"], "unknown key"), (["--model", "depth"], "KEY=VALUE"),
                     (["--model", "depth=1"], "invalid model options"),
                     (["--model", "depth=4", "--resume"], "--resume"),
                     (["--weight-decay", "-1"], "--weight-decay")):
        res = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), *bad])
        assert res.exit_code != 0 and why in res.output, res.output
        assert "Traceback" not in res.output


def test_resume_under_more_processes_gives_new_ranks_their_own_crops() -> None:
    from n3cli.train.trainer import restore_rng

    saved = torch.Generator().manual_seed(5)
    state = saved.get_state()
    draws = []
    for rank in (0, 1, 2):  # a 1-process checkpoint resumed under 3 processes
        gen = torch.Generator()
        restore_rng(gen, [state], rank, seed=0, step=100)
        draws.append(torch.rand(4, generator=gen))
    torch.testing.assert_close(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])


def test_a_resumed_real_run_takes_a_blind_floor_from_the_command_line(tmp_path: Path) -> None:
    """``n3 train --resume --set nmse_blind_floor=S`` gives no noise: the run's own (a real run's) decides, not the
    command line's default."""
    from n3cli.train.config import TrainConfig

    cli = TrainConfig.from_dict({"out": str(tmp_path), "data": [], "nmse_blind_floor": 20.0})
    cli.validate(resolved=False)  # what the CLI checks before it reads the run
    with pytest.raises(N3Error, match="nmse_blind_floor applies"):
        cli.validate()
    TrainConfig.from_dict({"out": str(tmp_path), "data": [], "noise": "real", "loss": "nmse",
                           "nmse_blind_floor": 20.0}).validate()
    with pytest.raises(N3Error, match="nmse_blind_floor applies"):
        TrainConfig.from_dict({"out": str(tmp_path), "data": [], "task": "sr", "noise": "real",
                               "nmse_blind_floor": 20.0}).validate()


def test_a_failed_final_barrier_still_leaves_the_process_group(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from n3cli.train import trainer

    left = []

    def barrier() -> None:
        raise RuntimeError("Connection closed by peer\nmore")

    monkeypatch.setattr(trainer.dist, "barrier", barrier)
    monkeypatch.setattr(trainer.dist, "destroy_process_group", lambda: left.append(True))
    trainer._end_distributed(wait=True)  # reported, not raised
    assert left == [True]
    assert "final barrier failed (Connection closed by peer)" in capsys.readouterr().err


@pytest.mark.parametrize("key,value", [("eval_every", 0), ("log_every", 0), ("val_limit", 0), ("precise_bn", -1),
                                       ("checkpoint_minutes", -1.0), ("grad_clip", -1.0), ("budget_hours", -1.0),
                                       ("val_sigma", -5.0), ("val_sigma", 500.0)])
def test_settings_out_of_range_are_refused_before_the_run_folder(tmp_path: Path, data: Path, key: str,
                                                                 value: float) -> None:
    """(eval_every / log_every / val_limit 0 divided by zero mid-run; negative budgets ran 0 steps and exited 0.)"""
    with pytest.raises(N3Error, match=key):
        train(_cfg(tmp_path, data, **{key: value}))
    assert not (tmp_path / "run").exists()


def test_a_moved_run_resumes_with_its_folders_given_again(tmp_path: Path, data: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders are stored as given (relative to where the run started): a moved run is pointed at them with
    --data / --val; a validation folder that still exists stays the run's own."""
    monkeypatch.chdir(tmp_path)
    train(tiny_config(Path("run"), Path("imgs"), val="imgs"), stop_after=2)
    (tmp_path / "sub").mkdir()
    (tmp_path / "run").rename(tmp_path / "sub" / "run")
    with pytest.raises(N3Error, match="keeps the run's validation folder"):  # "imgs" is still there
        train(tiny_config(Path("sub/run"), data), resume=True, val=str(tmp_path / "other"))
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(N3Error, match="point a moved run at its images with --data"):
        train(tiny_config(Path("run"), data), resume=True)
    last = train(tiny_config(Path("run"), data), resume=True, data=["../imgs"], val="../imgs")
    state = load(last)
    assert state["step"] == 4 and state["train_config"]["data"] == ["../imgs"]
    assert state["train_config"]["val"] == "../imgs"


def test_a_finished_run_resumed_says_so_and_changes_nothing(tmp_path: Path, data: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    last = train(_cfg(tmp_path, data))
    before = last.read_bytes()
    log = (tmp_path / "run" / "log.jsonl").read_text()
    config = (tmp_path / "run" / "config.json").read_text()
    assert train(_cfg(tmp_path, data), resume=True, lr=1e-4) == last
    assert "is finished (step 4 of 4; give a longer --steps" in capsys.readouterr().err
    assert last.read_bytes() == before and (tmp_path / "run" / "log.jsonl").read_text() == log
    assert (tmp_path / "run" / "config.json").read_text() == config


def test_a_finished_run_not_yet_measured_at_its_end_is_measured_on_resume(tmp_path: Path, data: Path) -> None:
    """A run killed during its final validation, after a timed checkpoint at its last step: resuming measures it."""
    last = train(_cfg(tmp_path, data, eval_every=3))
    log = tmp_path / "run" / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps(r) + "\n" for r in records if not ("val_psnr" in r and r["step"] == 4)))
    train(_cfg(tmp_path, data, eval_every=3), resume=True)
    after = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("val_psnr" in r and r["step"] == 4 for r in after)
    assert load(last)["step"] == 4


def test_a_folder_with_another_runs_files_but_no_checkpoint_is_refused(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 10}\n')
    (run / "train.out").write_text("a shell's redirect, made before n3 starts\n")
    for resume in (False, True):
        with pytest.raises(N3Error, match="log.jsonl but no checkpoint"):
            train(_cfg(tmp_path, data), resume=resume)
    (run / "log.jsonl").unlink()
    assert load(train(_cfg(tmp_path, data)))["step"] == 4  # train.out alone is no run


def test_a_missing_validation_folder_is_named_as_such(tmp_path: Path, data: Path) -> None:
    with pytest.raises(N3Error, match="validation data folder not found"):
        train(_cfg(tmp_path, data, val=str(tmp_path / "nope")))
