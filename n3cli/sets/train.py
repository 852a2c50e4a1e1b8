"""Training and evaluation of CNNNet and CNNNet+N3 on synthetic two-view correspondences (Table 6).

Loss: class-balanced binary cross-entropy on the logits (Yi et al.: half the weight on the mean
over the set's inliers, half on the mean over its outliers), optionally plus ``ess_weight`` times
Yi et al.'s essential-matrix term min(‖e - e*‖², ‖e + e*‖²) from step ``ess_after`` on (e: the
unit eigenvector of the weighted eight-point system, e*: the true E with unit norm); off by
default. Adam, lr 1e-3, decayed by half a cosine over the run (``schedule="cosine"``, default) or
constant. Both nets see the same sequence of training sets (samples 0, 1, 2, … of the train split,
``batch`` per step); ``seed`` sets the initialisation. The weights tested are those of the best
validation (mean of the three mAPs on the validation split, checked every ``val_every`` steps and at
the end; ``select="last"`` tests the final weights instead): the validation mAP swings between checks,
so the last step alone is a lottery.

Evaluation on the test split: weighted eight-point with weights relu(tanh(logit)) ("No Net": all
correspondences with weight 1), pose by cheirality, mAP at 5°/10°/20°
(:func:`n3cli.sets.geometry.mean_average_precision`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..atomic import write_atomic, write_text_atomic
from ..errors import N3Error
from .data import SPLITS, CorrespondenceBatch, TwoViewConfig, make_batch
from .geometry import PoseChoice, eight_point_vector, estimate_pose, mean_average_precision, pose_error_deg
from .model import CNNNet, CNNNetConfig, correspondence_weights

MODELS = {"cnnnet": ("CNNNet", False), "n3": ("CNNNet+N3", True)}
THRESHOLDS = (5, 10, 20)


@dataclass
class SetsTrainConfig:
    """Everything a run depends on (written to results.json)."""

    steps: int = 2000
    n: int = 1000
    batch: int = 4
    seed: int = 0
    lr: float = 1e-3
    schedule: str = "cosine"  # cosine | constant
    select: str = "best"  # best (validation) | last
    models: list[str] = field(default_factory=lambda: ["cnnnet", "n3"])
    channels: int = 128
    blocks: int = 12
    k: int = 4
    embed_dim: int = 32
    ess_weight: float = 0.0
    ess_after: int = 0
    test_sets: int = 500
    val_sets: int = 64
    val_every: int = 500
    eval_batch: int = 4
    log_every: int = 50
    time_limit_min: float | None = None
    choose: PoseChoice = "cheirality"
    device: str = "cpu"
    out: str | None = None

    def validate(self) -> None:
        """Name the first bad setting."""
        for m in self.models:
            if m not in MODELS:
                raise N3Error(f"unknown model {m!r}; expected cnnnet or n3")
        if self.schedule not in ("cosine", "constant") or self.select not in ("best", "last"):
            raise N3Error(f"schedule must be cosine or constant and select best or last, got "
                          f"{self.schedule!r} / {self.select!r}")
        if self.choose not in ("cheirality", "oracle"):
            raise N3Error(f"choose must be cheirality or oracle, got {self.choose!r}")


def balanced_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Class-balanced BCE: per set 0.5·mean over inliers + 0.5·mean over outliers, averaged over sets."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    pos, neg = labels, 1.0 - labels
    per_set = 0.5 * (bce * pos).sum(-1) / pos.sum(-1).clamp_min(1.0) + \
        0.5 * (bce * neg).sum(-1) / neg.sum(-1).clamp_min(1.0)
    return per_set.mean()


def essential_loss(x: Tensor, logits: Tensor, E_gt: Tensor) -> Tensor:
    """Yi et al.'s regression term: min(‖e - e*‖², ‖e + e*‖²), e from the weighted eight-point system."""
    e = eight_point_vector(x.double(), correspondence_weights(logits).double())
    target = E_gt.double().flatten(-2)
    target = target / target.norm(dim=-1, keepdim=True)
    return torch.minimum((e - target).square().sum(-1), (e + target).square().sum(-1)).mean().to(logits.dtype)


def build_model(name: str, cfg: SetsTrainConfig) -> CNNNet:
    """CNNNet (name "cnnnet") or CNNNet+N3 ("n3") with the run's sizes."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return CNNNet(CNNNetConfig(channels=cfg.channels, blocks=cfg.blocks, n3=MODELS[name][1], k=cfg.k,
                               embed_dim=cfg.embed_dim, n3_after=max(1, cfg.blocks // 2)))


def train_step(model: CNNNet, opt: torch.optim.Optimizer, batch: CorrespondenceBatch, ess_weight: float = 0.0) -> dict:
    """One optimiser step on a batch; returns the loss terms as floats."""
    model.train()
    logits = model(batch.x)
    cls = balanced_bce(logits, batch.labels)
    loss = cls
    rec = {"loss_cls": float(cls.detach())}
    if ess_weight > 0:
        ess = essential_loss(batch.x, logits, batch.E)
        loss = loss + ess_weight * ess
        rec["loss_ess"] = float(ess.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    rec["loss"] = float(loss.detach())
    return rec


def _chunks(start: int, count: int, size: int) -> list[range]:
    return [range(i, min(i + size, start + count)) for i in range(start, start + count, size)]


@torch.no_grad()
def evaluate(model: CNNNet | None, split: str, count: int, data: TwoViewConfig, eval_batch: int = 4,
             choose: PoseChoice = "cheirality", device: torch.device | str = "cpu") -> dict:
    """Pose mAP on samples 0..count-1 of ``split``; ``model=None`` is "No Net" (all weights 1).

    Also: the median pose error, the balanced loss, and precision / recall of logit > 0.
    """
    if model is not None:
        model.eval()
    errors, losses, tp, fp, fn = [], [], 0.0, 0.0, 0.0
    for idx in _chunks(0, count, eval_batch):
        b = make_batch(split, idx, data)
        x = b.x.double()
        if model is None:
            w = torch.ones_like(x[..., 0])
        else:
            logits = model(b.x.to(device)).cpu().float()
            losses.append(float(balanced_bce(logits, b.labels)) * len(idx))
            w = correspondence_weights(logits).double()
            pred = logits > 0
            lab = b.labels.bool()
            tp += float((pred & lab).sum())
            fp += float((pred & ~lab).sum())
            fn += float((~pred & lab).sum())
        R, t = estimate_pose(x, w, choose, b.R, b.t)
        errors.append(pose_error_deg(R, t, b.R, b.t))
    err = torch.cat(errors)
    res: dict = {**mean_average_precision(err, THRESHOLDS), "median_err_deg": float(err.median()), "sets": count}
    if model is not None:
        res["loss"] = sum(losses) / count
        res["precision"] = tp / max(tp + fp, 1.0)
        res["recall"] = tp / max(tp + fn, 1.0)
    return res


def save_weights(model: CNNNet, path: Path, meta: dict) -> None:
    """State dict as safetensors, with the architecture and ``meta`` as JSON in the header."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"config": json.dumps(model.config.to_dict()), "meta": json.dumps(meta)}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_weights(path: str | Path) -> tuple[CNNNet, dict]:
    """A net saved by :func:`save_weights` (architecture from the header) and its ``meta``; eval mode."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if "config" not in header:
        raise ValueError(f"{path}: no network configuration in the safetensors header")
    model = CNNNet(CNNNetConfig(**json.loads(header["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), json.loads(header.get("meta", "{}"))


def train_model(name: str, cfg: SetsTrainConfig, data: TwoViewConfig,
                log: Callable[[str], None] = print) -> tuple[CNNNet, dict]:
    """Train one net for ``cfg.steps`` steps (or until the time limit); returns it and its record."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(name, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    label = MODELS[name][0]
    params = sum(p.numel() for p in model.parameters())
    log(f"{label}: {params} parameters, {cfg.steps} steps of {cfg.batch} sets × {cfg.n} correspondences")
    start = time.perf_counter()
    window: list[float] = []
    step_times: list[float] = []
    step = 0
    if cfg.steps * cfg.batch > SPLITS["train"][1]:
        raise ValueError("more training sets requested than the train split holds")
    if cfg.schedule not in ("cosine", "constant") or cfg.select not in ("best", "last"):
        raise ValueError(f"schedule must be cosine or constant and select best or last, got "
                         f"{cfg.schedule!r} / {cfg.select!r}")
    best: tuple[float, int, dict[str, Tensor]] | None = None
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        if cfg.schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / cfg.steps))
        batch = make_batch("train", range((step - 1) * cfg.batch, step * cfg.batch), data).to(device)
        ess = cfg.ess_weight if step > cfg.ess_after else 0.0
        rec = train_step(model, opt, batch, ess)
        step_times.append(time.perf_counter() - t0)
        window.append(rec["loss"])
        if not math.isfinite(rec["loss"]):
            raise FloatingPointError(f"{label}: loss became {rec['loss']} at step {step}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            recent = step_times[-cfg.log_every:]
            entry = {"step": step, "loss": sum(window) / len(window), "s_per_step": sum(recent) / len(recent)}
            history.append(entry)
            log(f"{label} step {step:>6}  loss {entry['loss']:.4f}  {entry['s_per_step']:.3f} s/step")
            window = []
        out_of_time = cfg.time_limit_min is not None and time.perf_counter() - start > 60 * cfg.time_limit_min
        last = step == cfg.steps or out_of_time
        if cfg.val_every and (step % cfg.val_every == 0 or last):
            val = evaluate(model, "val", cfg.val_sets, data, cfg.eval_batch, cfg.choose, device)
            history.append({"step": step, "val": val})
            score = sum(val[f"mAP@{t}"] for t in THRESHOLDS) / len(THRESHOLDS)
            log(f"{label} step {step:>6}  val " + _fmt(val))
            if best is None or score >= best[0]:
                best = (score, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if out_of_time:
            log(f"{label}: time limit reached after {step} steps")
            break
    selected = step
    if cfg.select == "best" and best is not None:
        model.load_state_dict(best[2])
        selected = best[1]
        log(f"{label}: testing the weights of step {selected} (best validation)")
    warm = step_times[min(5, len(step_times) - 1):] if step_times else [float("nan")]
    record = {"name": label, "steps": step, "selected_step": selected, "parameters": params,
              "train_seconds": time.perf_counter() - start,
              "s_per_step": sum(warm) / len(warm), "history": history}
    return model, record


def _file(name: str) -> str:
    return "cnnnet" if name == "cnnnet" else "cnnnet_n3"


def _fmt(res: dict) -> str:
    parts = [f"{k} {res[k]:.3f}" for k in (f"mAP@{t}" for t in THRESHOLDS)]
    parts.append(f"median {res['median_err_deg']:.1f}°")
    if "precision" in res:
        parts.append(f"P {res['precision']:.3f} R {res['recall']:.3f} loss {res['loss']:.4f}")
    return "  ".join(parts)


def format_table(results: dict[str, dict], sets: int, n: int) -> str:
    """Table 6 layout: rows = thresholds, columns = No Net and the trained nets."""
    names = list(results)
    lines = [f"mAP, synthetic two-view test split ({sets} pairs, N = {n})",
             "Threshold " + "".join(f"{nm:>12}" for nm in names)]
    for th in THRESHOLDS:
        lines.append(f"{th:>8}° " + "".join(f"{results[nm][f'mAP@{th}']:>12.3f}" for nm in names))
    lines.append("median err" + "".join(f"{results[nm]['median_err_deg']:>11.1f}°" for nm in names))
    trained = [nm for nm in names if "precision" in results[nm]]
    if trained:
        lines.append("precision " + "".join(f"{results[nm]['precision']:>12.3f}" if nm in trained else f"{'':>12}"
                                            for nm in names))
        lines.append("recall    " + "".join(f"{results[nm]['recall']:>12.3f}" if nm in trained else f"{'':>12}"
                                            for nm in names))
    return "\n".join(lines)


def run(cfg: SetsTrainConfig, data: TwoViewConfig | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the requested nets, evaluate them and No Net on the test split, write ``cfg.out``."""
    data = data or TwoViewConfig(n=cfg.n)
    out = Path(cfg.out) if cfg.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    tests: dict[str, dict] = {"No Net": evaluate(None, "test", cfg.test_sets, data, cfg.eval_batch, cfg.choose)}
    log("No Net  " + _fmt(tests["No Net"]))
    records = {}
    for name in cfg.models:
        model, rec = train_model(name, cfg, data, log)
        tests[rec["name"]] = evaluate(model, "test", cfg.test_sets, data, cfg.eval_batch, cfg.choose, device)
        rec["test"] = tests[rec["name"]]
        records[name] = rec
        log(f"{rec['name']}  test " + _fmt(rec["test"]))
        if out:
            save_weights(model, out / f"{_file(name)}.safetensors",
                         {"steps": rec["steps"], "selected_step": rec["selected_step"], "test": rec["test"]})
    table = format_table(tests, cfg.test_sets, data.n)
    results = {"config": asdict(cfg), "data": data.to_dict(), "test": tests, "models": records, "table": table}
    if out:
        write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    return results


def parse_args(argv: Sequence[str] | None = None) -> tuple[SetsTrainConfig, int | None]:
    """The command line of :func:`main`; returns the config and the thread count."""
    d = SetsTrainConfig()
    p = argparse.ArgumentParser(prog="n3 sets", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps per net")
    p.add_argument("--n", type=int, default=d.n, help="correspondences per set")
    p.add_argument("--batch", type=int, default=d.batch, help="sets per step")
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation seed")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule, help="learning-rate schedule")
    p.add_argument("--select", choices=["best", "last"], default=d.select,
                   help="test the best-validation weights or the last ones")
    p.add_argument("--models", default=",".join(d.models), help="comma-separated: cnnnet, n3")
    p.add_argument("--channels", type=int, default=d.channels)
    p.add_argument("--blocks", type=int, default=d.blocks, help="residual blocks (N3 block after half of them)")
    p.add_argument("--k", type=int, default=d.k, help="neighbours of the N3 block")
    p.add_argument("--embed-dim", type=int, default=d.embed_dim)
    p.add_argument("--ess-weight", type=float, default=d.ess_weight, help="essential-matrix loss weight (0: off)")
    p.add_argument("--ess-after", type=int, default=d.ess_after, help="steps before the essential loss starts")
    p.add_argument("--test-sets", type=int, default=d.test_sets)
    p.add_argument("--val-sets", type=int, default=d.val_sets)
    p.add_argument("--val-every", type=int, default=d.val_every, help="steps between validations (0: never)")
    p.add_argument("--eval-batch", type=int, default=d.eval_batch)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--time-limit", type=float, default=None, help="minutes of training per net (optional cap)")
    p.add_argument("--choose", choices=["cheirality", "oracle"], default=d.choose, help="pose among E's four")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="folder for results.json and the weights (safetensors)")
    a = p.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    cfg = SetsTrainConfig(steps=a.steps, n=a.n, batch=a.batch, seed=a.seed, lr=a.lr, models=models,
                          schedule=a.schedule, select=a.select,
                          channels=a.channels, blocks=a.blocks, k=a.k, embed_dim=a.embed_dim,
                          ess_weight=a.ess_weight, ess_after=a.ess_after, test_sets=a.test_sets,
                          val_sets=a.val_sets, val_every=a.val_every, eval_batch=a.eval_batch,
                          log_every=a.log_every, time_limit_min=a.time_limit, choose=a.choose,
                          device=a.device, out=a.out)
    return cfg, a.threads


def execute(cfg: SetsTrainConfig, threads: int | None = 1) -> dict:
    """Train, evaluate and print the table for a run configuration; returns the results dict."""
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    # Subnormal floats take a slow path on x86 (MKL's exp, GEMM) and stalled a CPU run many times over;
    # flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = run(cfg, log=log)
    print(results["table"], flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    """Script entry (``examples/sets/correspondences.py``): the command line of :func:`parse_args`."""
    return execute(*parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
