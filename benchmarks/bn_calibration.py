"""How much the BN statistics' source moves a blind colour model on real photos (issue #49, a diagnostic).

Precise BN (``n3cli.train.precise_bn``) recomputes the BN statistics from batches of the run's own training mix.
This script recomputes them from other mixes of the same kind (``n3 weights export --bn-noise``) and validates each
on the run's validation set (PolyU-val crops, blind, as ``n3 train`` does), plain weights and weight average:

    python benchmarks/bn_calibration.py runs/denoise-real/last.pt \
        --noise real:camera=0.5,known=0.5,nrmix=0.6 --noise real:camera=1.0,known=0.5,nrmix=0.6 --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from n3cli.train.checkpoint import load
from n3cli.train.config import TrainConfig
from n3cli.train.export import export_run
from n3cli.train.trainer import run_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--noise", action="append", required=True, help="a training noise of the run's kind (repeatable)")
    ap.add_argument("--batches", type=int, default=40, help="calibration batches per mix")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    state = load(args.checkpoint)
    cfg = TrainConfig.from_dict(state["train_config"])
    if cfg.val is None:
        raise SystemExit("the run has no validation set")
    validation = run_task(cfg).validation(cfg.val, cfg.val_limit, cfg.val_sigma)
    print(f"{args.checkpoint} step {state['step']}: validation {cfg.val} ({cfg.val_limit}), "
          f"{args.batches} calibration batches per mix")
    print("| BN statistics from | plain | weight average |\n| --- | ---: | ---: |")
    for spec in args.noise:
        psnr = [validation(export_run(args.checkpoint, "probe", args.batches, ema, bn_noise=spec)[0],
                           torch.device("cpu")) for ema in (False, True)]
        print(f"| `{spec}` | {psnr[0]:.3f} | {psnr[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
