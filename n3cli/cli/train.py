"""`n3 train`: a run file (``--config run.toml``), ``--set`` overrides and the common flags; the run itself
lives in :mod:`n3cli.train`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ..errors import N3Error
from ..train.config import TrainConfig, parse_sets, read_config
from ..train.trainer import train
from .common import ThreadsOpt, err_console, handle_errors, is_tty
from .devices import pick_device, set_threads

#: ``n3 train`` also takes any run setting as a flag of its own (``--batch-size 8``, ``--model depth=10``):
#: the spelling of earlier versions, kept out of the help.
CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}

EPILOG = """Any setting of the run file can be given with --set KEY=VALUE (model.KEY=VALUE for the network), e.g.
--set noise=nlf --set optimizer=adamw --set model.depth=10; see docs/training.md and docs/examples/.

Examples:

  n3 train --config docs/examples/denoise-nlf.toml --out runs/nlf

  n3 train --data ../shared/data/Train400 --val ../shared/data/Set12 --set noise=nlf --out runs/nlf

  n3 train --out runs/nlf --resume --steps 90000
"""


@handle_errors
def train_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Run file (TOML, or a run's config.json) "
                                                "holding any training setting.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="A setting over the run file (repeatable).")] = None,
    data: Annotated[list[Path] | None, typer.Option("--data", metavar="<path>",
                                                    help="Training image folder (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder: checkpoints, log.jsonl, config.json.")] = None,
    val: Annotated[Path | None, typer.Option("--val", help="Validation image folder (PSNR logged).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimiser steps of the whole run (default 1000; "
                                              "with --resume: a new length).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (--steps, --set lr=, "
                                         "loss=, optimizer=, ema=, batch_size=, precision=, noise= of the same "
                                         "kind switch it).")] = False,
    revive: Annotated[bool, typer.Option("--revive", hidden=True, help="Before training, redraw the local "
                                         "blocks' silent channels, with the output kept.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    threads: ThreadsOpt = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train a model with the paper's protocol (resumable; use torchrun for several processes)."""
    flags = {"data": [str(d) for d in data] if data else None, "out": str(out) if out else None,
             "val": str(val) if val else None, "steps": steps}
    given = {**flag_settings(ctx.args), **parse_sets(sets or []), **{k: v for k, v in flags.items() if v is not None}}
    settings = {**(read_config(config) if config else {}), **given}
    if resume and ("model" in given or "init" in given):
        what = "model.KEY settings change the network" if "model" in given else "--init starts a new run from weights"
        raise N3Error(f"{what}; it cannot be combined with --resume")
    if resume and "out" in settings and (Path(settings["out"]) / "last.pt").exists():
        settings.setdefault("data", [])  # the run's own data is used
    cfg = TrainConfig.from_dict({"precision": "auto", **settings})  # n3 train's default: bf16 where native
    cfg.validate(resolved=not resume)  # a bad option is named before any run folder is looked at
    dev = pick_device(device)
    set_threads(threads)
    noise = f", noise {cfg.noise}" if cfg.task == "denoise" else ""
    what = f"resuming {cfg.out}" if resume else f"training {cfg.arch} ({cfg.task}{noise})"
    n = torch.get_num_threads()
    err_console.print(f"{what} on {dev}, {n} thread{'s' if n != 1 else ''}", highlight=False)
    bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("{task.fields[rate]:.2f} steps/s  loss {task.fields[loss]:.2e}"), TimeRemainingColumn(),
                   console=err_console, disable=not is_tty())
    with bar:
        task_id = bar.add_task("train", total=cfg.steps, rate=0.0, loss=float("nan"))
        # resumed: the run's folders are re-pointed only by --data / --val given here, not by a run file's
        switches = {k: v for k, v in settings.items() if k not in ("data", "val") or k in given} if resume else {}
        last = train(cfg, resume=resume, device=dev, on_log=_printer(bar, task_id), revive=revive, **switches)
    err_console.print(f"checkpoint: {last}")


def flag_settings(args: list[str]) -> dict[str, Any]:
    """Run settings given as flags of their own (``--batch-size 8``, ``--lr=1e-4``, ``--model depth=10``)."""
    items: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or len(token) < 3:
            raise N3Error(f"unexpected argument {token!r} (settings: --set KEY=VALUE)")
        name, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise N3Error(f"{token} needs a value")
            value, i = args[i + 1], i + 1
        key = name.replace("-", "_")
        if key != "model" and key not in TrainConfig.__dataclass_fields__:
            raise N3Error(f"no such option: --{name}")
        items.append(f"model.{value}" if key == "model" else f"{key}={value}")
        i += 1
    return parse_sets(items, flag="option")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` builder overrides (``--model``), checked against :class:`n3cli.nn.nets.NetConfig`."""
    return parse_sets([f"model.{item}" for item in items], flag="--model").get("model", {})


def _printer(bar: Progress, task_id: TaskID) -> Callable[[dict[str, Any]], None]:
    """A progress bar (steps/s, loss, ETA) in a terminal; one line per log record in a log file."""

    def show(rec: dict[str, Any]) -> None:
        if "revived" in rec:
            bar.console.print(f"step {rec['step']:>7}  revived {rec['revived']} silent channels")
        elif "val_psnr" in rec:
            if rec.get("val_nlf"):
                what = "raw NLF {:g},{:g}".format(*rec["val_nlf"])
            elif rec.get("val_real"):
                what = f"{rec['val_real']} real pairs, blind"
            else:
                what = f"sigma {rec['val_sigma']:g}" if rec.get("val_sigma") is not None else "x2/x3/x4 on Y"
            bar.console.print(f"step {rec['step']:>7}  val PSNR {rec['val_psnr']:.3f} dB ({what})")
        elif is_tty():
            bar.update(task_id, completed=rec["step"], total=rec["steps"], rate=rec["steps_per_s"], loss=rec["loss"])
        else:
            err_console.print(f"step {rec['step']:>7}  loss {rec['loss']:.3e}  lr {rec['lr']:.2e}  "
                              f"{rec['steps_per_s']:.2f} steps/s")
    return show
