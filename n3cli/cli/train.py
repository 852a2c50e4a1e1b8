"""`n3 train`: parsing and messages only; the loop lives in :mod:`n3cli.train.loop`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ..errors import N3Error
from ..nn.nets import NetConfig
from ..train.loop import ARCHS, TrainConfig, train
from .common import err_console, handle_errors, is_tty
from .devices import pick_device, set_threads


@handle_errors
def train_cmd(
    data: Annotated[list[Path], typer.Option("--data", help="Training image folder (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, log.jsonl, config.json.")],
    task: Annotated[str, typer.Option(help="denoise or sr.")] = "denoise",
    arch: Annotated[str, typer.Option(help=f"One of: {', '.join(ARCHS)}.")] = "n3net",
    val: Annotated[Path | None, typer.Option(help="Validation image folder (PSNR logged).")] = None,
    noise: Annotated[str, typer.Option(help="Gaussian sigma ('25'), 'nlf[:gaussian_fraction]' (noise-level-"
                                        "conditional) or 'raw' (conditional, camera raw CFA planes with "
                                        "Poisson-Gaussian noise).")] = "25",
    steps: Annotated[int | None, typer.Option(help="Optimiser steps of the whole run (default 1000; with "
                                               "--resume: a new length for the run).")] = None,
    budget_hours: Annotated[float | None, typer.Option(help="CPU-hour budget: the schedule follows the budget "
                                                       "used and the run stops when it is spent.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Crops per step and process (default 16; with --resume: a new batch size, e.g. 8 under torchrun "
             "--nproc_per_node 2 to keep a run's 16 crops per step).")] = None,
    patch: Annotated[int, typer.Option(help="Crop size (the N3 block's search region is 80).")] = 80,
    lr: Annotated[float | None, typer.Option(help="Initial rate (default 1e-3 denoise, 0.1 sr; "
                                                 "with --resume: rescales the run's schedule).")] = None,
    schedule: Annotated[str, typer.Option(help="paper (exponential / step decay) or cosine.")] = "paper",
    optimizer: Annotated[str | None, typer.Option(
        help="adam (the paper's: L2 weight decay), adamw (decoupled weight decay: channels do not die out "
             "under the decay) or sgd (default: adam for denoise, sgd for sr; with --resume: switches between "
             "adam and adamw).")] = None,
    weight_decay: Annotated[float, typer.Option(
        help="Weight decay on convolution weights and BN scales: an L2 term (adam, sgd) or decoupled (adamw). "
             "With adam it is relative to the mean-squared-error gradient, which is tiny: 1e-4 (the paper's "
             "figure) outweighs it and silences most channels over a long run (docs/results.md, 'Silent channels').")
    ] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and sampling.")] = 0,
    eval_every: Annotated[int, typer.Option(help="Steps between validations.")] = 250,
    val_limit: Annotated[int, typer.Option(help="Validation images used.")] = 4,
    checkpoint_minutes: Annotated[float, typer.Option(help="Minutes between checkpoints.")] = 5.0,
    precise_bn: Annotated[int, typer.Option(help="Training batches used to recompute BN statistics before each "
                                            "validation (0: use the running averages).")] = 40,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 (mixed precision; the N3 math stays float32) "
                                                  "or auto: bf16 where the hardware runs it natively "
                                                  "(default auto; with --resume: the run's own).")] = None,
    loss: Annotated[str | None, typer.Option(help="mse (the paper's) or nmse: each sample's squared error divided "
                                             "by its noise variance (sr: by the bicubic input's squared "
                                             "error), so all noise levels (scales) count alike in dB "
                                             "(default mse; with --resume: switches the run's loss).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Builder override KEY=VALUE (repeatable), e.g. --model features=32 --model depth=10 "
                        "--model bn=true: a lighter network than the paper's.")] = None,
    init: Annotated[Path | None, typer.Option(help="Start from these weights (a run's last.pt/best.pt or an "
                                              "unfused .safetensors) with a fresh optimizer and schedule: "
                                              "fine-tuning.")] = None,
    ema: Annotated[float | None, typer.Option(
        help="Keep a moving average of the weights with this decay per step (e.g. 0.999; 0: off), validated "
             "beside the weights and exported with 'n3 weights export --ema' (with --resume: switches it on, "
             "starting from the current weights, or changes its decay).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    revive: Annotated[bool, typer.Option("--revive", help="Before training, give the local blocks' silent channels "
                                         "(constant after BN + ReLU, see benchmarks/channel_health.py) new "
                                         "weights, with the network's output kept.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train a model with the paper's protocol (resumable; use torchrun for several processes).

    Example: n3 train --data ../shared/data/Train400 --val ../shared/data/Set12 --noise nlf --out runs/nlf
    """
    dev = pick_device(device)
    set_threads(threads)
    cfg = TrainConfig(out=str(out), data=[str(d) for d in data], task=task, arch=arch,
                      val=str(val) if val else None, noise=noise, steps=steps or 1000, budget_hours=budget_hours,
                      batch_size=batch_size or 16, patch=patch, lr=lr, schedule=schedule, optimizer=optimizer,
                      weight_decay=weight_decay, seed=seed, eval_every=eval_every,
                      val_limit=val_limit, checkpoint_minutes=checkpoint_minutes, precise_bn=precise_bn,
                      precision=precision or "auto", loss=loss or "mse", init=str(init) if init else None,
                      model=parse_overrides(model or []), ema=ema or 0.0)
    cfg.validate()  # a bad option is named before any run folder is looked at
    if resume and model:
        raise N3Error("--model changes the network; it cannot be combined with --resume")
    if resume and init is not None:
        raise N3Error("--init starts a new run from weights; it cannot be combined with --resume")
    what = f"resuming {out}" if resume else f"training {arch} ({task}{', noise ' + noise if task == 'denoise' else ''})"
    err_console.print(f"{what} on {dev}, {torch.get_num_threads()} threads", highlight=False)
    bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("{task.fields[rate]:.2f} steps/s  loss {task.fields[loss]:.2e}"), TimeRemainingColumn(),
                   console=err_console, disable=not is_tty())
    with bar:
        task_id = bar.add_task("train", total=cfg.steps, rate=0.0, loss=float("nan"))
        last = train(cfg, resume=resume, device=dev, on_log=_printer(bar, task_id),
                     steps=steps if resume else None, precision=precision if resume else None,
                     lr=lr if resume else None, loss=loss if resume else None,
                     optimizer=optimizer if resume else None, revive=revive, ema=ema if resume else None,
                     batch_size=batch_size if resume else None)
    err_console.print(f"saved {last}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` builder overrides: integers, floats and true/false are converted, the rest stay text.
    Keys are checked against the network configuration (:class:`n3cli.nn.nets.NetConfig`)."""
    known = set(NetConfig.__dataclass_fields__) - {"arch", "in_channels", "out_channels", "extra"}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not text.strip():
            raise N3Error(f"--model {item!r}: expected KEY=VALUE")
        if key not in known:
            raise N3Error(f"--model {item!r}: unknown key {key!r}; expected one of {', '.join(sorted(known))}")
        text = text.strip()
        value: Any
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        out[key] = value
    return out


def _printer(bar: Progress, task_id: TaskID) -> Callable[[dict[str, Any]], None]:
    """A progress bar (steps/s, loss, ETA) in a terminal; one line per log record in a log file."""

    def show(rec: dict[str, Any]) -> None:
        if "revived" in rec:
            bar.console.print(f"step {rec['step']:>7}  revived {rec['revived']} silent channels")
        elif "val_psnr" in rec:
            if rec.get("val_nlf"):
                what = "raw NLF {:g},{:g}".format(*rec["val_nlf"])
            else:
                what = f"sigma {rec['val_sigma']:g}" if rec.get("val_sigma") is not None else "x2/x3/x4 on Y"
            bar.console.print(f"step {rec['step']:>7}  val PSNR {rec['val_psnr']:.3f} dB ({what})")
        elif is_tty():
            bar.update(task_id, completed=rec["step"], total=rec["steps"], rate=rec["steps_per_s"], loss=rec["loss"])
        else:
            err_console.print(f"step {rec['step']:>7}  loss {rec['loss']:.3e}  lr {rec['lr']:.2e}  "
                              f"{rec['steps_per_s']:.2f} steps/s")
    return show
