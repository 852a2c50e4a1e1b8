"""Adam with L2 weight decay (the paper's) against AdamW and Adam without decay: silent channels and accuracy.

Trains the same small DnCNN (same seed, so the same crops and noise at every step) once with each
optimiser on Train400 at Gaussian σ 25 and logs, at every validation, the share of silent BN channels
(``n3cli.train.health``) and the validation PSNR (precise BN). Small enough for a few CPU minutes; the
mechanism it shows is the one measured on the long runs (``benchmarks/channel_health.py``).

    python benchmarks/optimizer_collapse.py --data ../shared/data/Train400 --val ../shared/data/Set12 \\
        --steps 2000 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from n3cli.train.config import TrainConfig  # noqa: E402
from n3cli.train.trainer import train  # noqa: E402

#: name -> (optimizer, weight decay): the paper's Adam + L2, AdamW, and Adam without any decay.
VARIANTS = {"adam": ("adam", 1e-4), "adamw": ("adamw", 1e-4), "adam-nodecay": ("adam", 0.0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--patch", type=int, default=40)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--optimizers", default=",".join(VARIANTS),
                    help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not args.data.is_dir() or not args.val.is_dir():
        print("data folders not found; skipped")
        return 0
    torch.set_num_threads(args.threads)
    rows: dict[int, dict[str, tuple[float, float]]] = {}
    names = [n.strip() for n in args.optimizers.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; expected some of {', '.join(VARIANTS)}")
    for opt in names:
        optimizer, decay = VARIANTS[opt]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(out=str(Path(tmp) / opt), data=[str(args.data)], val=str(args.val), arch="dncnn",
                              noise="25", steps=args.steps, batch_size=16, patch=args.patch, lr=args.lr,
                              schedule="cosine", optimizer=optimizer, weight_decay=decay,
                              eval_every=args.eval_every, val_limit=4,
                              log_every=50, precise_bn=10, precision="fp32",
                              model={"depth": args.depth, "features": args.features})

            def keep(r: dict, opt: str = opt) -> None:
                if "val_psnr" in r:
                    rows.setdefault(r["step"], {})[opt] = (r["val_psnr"], r["silent_channels"])
                    print(f"{opt} step {r['step']}: val {r['val_psnr']:.3f} dB, silent {r['silent_channels']:.1%}",
                          file=sys.stderr, flush=True)

            train(cfg, on_log=keep)
    print(f"DnCNN depth {args.depth}, {args.features} features, {args.patch}² crops, batch 16, σ 25, "
          f"cosine from {args.lr:g} over {args.steps} steps; validation: Set12 (4 images), precise BN")
    print("\n| step | " + " | ".join(f"{n}: val PSNR | {n}: silent channels" for n in names) + " |")
    print("| ---: |" + " ---: | ---: |" * len(names))
    for step in sorted(rows):
        cells = [f"{v[0]:.3f} | {v[1]:.1%}" if (v := rows[step].get(n)) else "– | –" for n in names]
        print(f"| {step} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
