"""`n3 sets`: correspondence classification on synthetic two-view data (paper Sec. 5.5, Table 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..cli.common import handle_errors
from .train import main


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
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(help="Torch CPU threads.")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for results.json and the weights.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train CNNNet and CNNNet+N3 on synthetic correspondences and print Table 6 (mAP at 5/10/20°).

    Example: n3 sets --steps 3000 --out runs/sets
    """
    argv = ["--steps", str(steps), "--n", str(n), "--batch", str(batch), "--seed", str(seed), "--lr", str(lr),
            "--schedule", schedule, "--select", select, "--models", models, "--k", str(k),
            "--ess-weight", str(ess_weight), "--ess-after", str(ess_after),
            "--test-sets", str(test_sets), "--val-sets", str(val_sets), "--val-every", str(val_every),
            "--device", device, "--threads", str(threads)]
    if time_limit is not None:
        argv += ["--time-limit", str(time_limit)]
    if out is not None:
        argv += ["--out", str(out)]
    main(argv)
