"""`n3 sets`: correspondence classification on synthetic two-view data (paper Sec. 5.5, Table 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import N3Error
from ..sets.train import SetsTrainConfig, execute
from .common import handle_errors
from .devices import pick_device


@handle_errors
def sets_cmd(
    steps: Annotated[int, typer.Option(help="Optimiser steps per net.")] = 2000,
    n: Annotated[int, typer.Option("--n", help="Correspondences per set.")] = 1000,
    batch: Annotated[int, typer.Option(help="Sets per step.")] = 4,
    seed: Annotated[int, typer.Option(help="Initialisation seed (the training sets are fixed).")] = 0,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="cosine (decay over the run) or constant.")] = "cosine",
    select: Annotated[str, typer.Option(help="Test the best-validation weights (best) or the last.")] = "best",
    models: Annotated[str, typer.Option(help="Comma-separated: cnnnet, n3.")] = "cnnnet,n3",
    k: Annotated[int, typer.Option("--k", help="Neighbours of the N3 block.")] = 4,
    ess_weight: Annotated[float, typer.Option(help="Weight of the essential-matrix loss (0: off).")] = 0.0,
    ess_after: Annotated[int, typer.Option(help="Steps before the essential-matrix loss starts.")] = 0,
    test_sets: Annotated[int, typer.Option(help="Test pairs evaluated.")] = 500,
    val_sets: Annotated[int, typer.Option(help="Validation pairs per validation.")] = 64,
    val_every: Annotated[int, typer.Option(help="Steps between validations (0: never).")] = 500,
    time_limit: Annotated[float | None, typer.Option(help="Minutes of training per net (cap).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "cpu",
    threads: Annotated[int, typer.Option(help="Torch CPU threads.")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for results.json and the weights.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train CNNNet and CNNNet+N3 on synthetic correspondences and print Table 6 (mAP at 5/10/20°).

    Example: n3 sets --steps 3000 --out runs/sets
    """
    positive = {"--steps": steps, "--n": n, "--batch": batch, "--k": k, "--test-sets": test_sets,
                "--val-sets": val_sets}
    for flag, value in positive.items():
        if value < 1:
            raise N3Error(f"{flag} must be >= 1, got {value}")
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise N3Error("--models names no model (cnnnet, n3)")
    if out is not None and (out / "results.json").exists():
        raise N3Error(f"{out} holds the results of an earlier run (results.json); choose another --out")
    cfg = SetsTrainConfig(steps=steps, n=n, batch=batch, seed=seed, lr=lr, schedule=schedule, select=select,
                          models=names, k=k, ess_weight=ess_weight, ess_after=ess_after, test_sets=test_sets,
                          val_sets=val_sets, val_every=val_every, time_limit_min=time_limit,
                          device=str(pick_device(device)), out=str(out) if out else None)
    execute(cfg, threads)
