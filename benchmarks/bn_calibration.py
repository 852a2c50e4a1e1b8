"""How much the BN statistics' source moves a blind colour model on real photos (issue #49, a diagnostic).

Precise BN (``n3cli.train.precise_bn``) recomputes the BN statistics from batches of the run's own training mix.
This script recomputes them from other mixes of the same kind (e.g. more simulated camera photos) and validates
each on the run's validation set (PolyU-val crops, blind, as ``n3 train`` does), plain weights and weight average:

    python benchmarks/bn_calibration.py runs/denoise-real/last.pt \
        --noise real:camera=0.5,known=0.5,nrmix=0.6 --noise real:camera=1.0,known=0.5,nrmix=0.6 --threads 1
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from n3cli.nn.nets import build
from n3cli.train.checkpoint import load
from n3cli.train.config import TrainConfig
from n3cli.train.precise_bn import recalibrate_bn
from n3cli.train.trainer import calibration_inputs, run_task, training_bank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--noise", action="append", required=True, help="a training noise of the run's kind (repeatable)")
    ap.add_argument("--batches", type=int, default=40, help="calibration batches (the run's precise_bn by default)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    state = load(args.checkpoint)
    base = TrainConfig.from_dict(state["train_config"])
    task = run_task(base)
    if base.val is None:
        raise SystemExit("the run has no validation set")
    validation = task.validation(base.val, base.val_limit, base.val_sigma)
    bank = training_bank(base)
    print(f"{args.checkpoint} step {state['step']}: validation {base.val} ({base.val_limit}), "
          f"{args.batches} calibration batches per mix")
    print("| BN statistics from | plain | weight average |\n| --- | ---: | ---: |")
    for spec in args.noise:
        cfg = TrainConfig.from_dict({**state["train_config"], "noise": spec})
        if type(run_task(cfg)) is not type(task):
            raise SystemExit(f"--noise {spec}: not a noise of the run's kind")
        row = []
        for key in ("model", "ema"):
            model = build({**state["net_config"], "noise_inputs": task.noise_inputs})
            model.load_state_dict(state[key])
            probe = copy.deepcopy(model)
            recalibrate_bn(probe, calibration_inputs(cfg, bank, args.batches))
            row.append(validation(probe, torch.device("cpu")))
        print(f"| `{spec}` | {row[0]:.3f} | {row[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
