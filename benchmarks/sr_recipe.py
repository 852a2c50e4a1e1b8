"""Which training recipe lets a VDSR-style network learn super-resolution in a short CPU budget?

Trains the same small VDSR (same seed: the same crops and scales at every step) under several recipes and
logs the validation PSNR on Y (Set5, ×2/×3/×4 averaged, precise BN) and the share of silent BN channels:
the paper's (conv/BN/ReLU blocks, SGD 0.1 with VDSR's gradient clipping, step decay), the one the long SR
run used (BN, Adam + L2 weight decay), and VDSR's own layers without BN under Adam. The bicubic input's
PSNR on the same images is the baseline.

    python benchmarks/sr_recipe.py --data ../shared/data/T91 --data ../shared/data/BSD200 \\
        --val ../shared/data/Set5 --steps 1500 --threads 1
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from n3cli.train.config import TrainConfig  # noqa: E402
from n3cli.train.tasks import SRTask  # noqa: E402
from n3cli.train.trainer import train  # noqa: E402

#: name -> (BN in the blocks, optimizer, initial rate, schedule, weight decay)
RECIPES = {
    "bn-sgd (paper)": (True, "sgd", 0.1, "paper", 1e-4),
    "bn-adam": (True, "adam", 1e-3, "cosine", 1e-4),
    "nobn-adam": (False, "adam", 1e-3, "cosine", 1e-4),
    "nobn-adam-nowd": (False, "adam", 1e-3, "cosine", 0.0),
}


def _share(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.1%}"  # nan: no BN layers to probe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--patch", type=int, default=40)
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of: " + ", ".join(RECIPES))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not all(d.is_dir() for d in args.data) or not args.val.is_dir():
        print("data folders not found; skipped")
        return 0
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.recipes.split(",")]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        ap.error(f"unknown recipes: {unknown}")
    bicubic = SRTask(41).validation(str(args.val), 5, 0.0)(torch.nn.Identity(), torch.device("cpu"))
    rows: dict[int, dict[str, tuple[float, float]]] = {}
    for name in names:
        bn, opt, lr, schedule, wd = RECIPES[name]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(out=str(Path(tmp) / "run"), data=[str(d) for d in args.data], val=str(args.val),
                              task="sr", arch="vdsr", steps=args.steps, batch_size=16, patch=args.patch, lr=lr,
                              schedule=schedule, optimizer=opt, weight_decay=wd, eval_every=args.eval_every,
                              val_limit=5, log_every=50, precise_bn=10 if bn else 0, precision="fp32",
                              model={"depth": args.depth, "features": args.features, "bn": bn})

            def keep(r: dict, name: str = name) -> None:
                if "val_psnr" in r:
                    rows.setdefault(r["step"], {})[name] = (r["val_psnr"], r["silent_channels"])
                    print(f"{name} step {r['step']}: val {r['val_psnr']:.3f} dB "
                          f"({r['val_psnr'] - bicubic:+.2f} over bicubic), silent {_share(r['silent_channels'])}",
                          file=sys.stderr, flush=True)

            train(cfg, on_log=keep)
    print(f"VDSR depth {args.depth}, {args.features} features, {args.patch}² crops, batch 16, scales 2/3/4 mixed, "
          f"{args.steps} steps; validation: Set5 on Y, ×2/×3/×4 averaged (bicubic {bicubic:.3f} dB)")
    print("\n| step | " + " | ".join(f"{n}: gain over bicubic | silent" for n in names) + " |")
    print("| ---: |" + " ---: | ---: |" * len(names))
    for step in sorted(rows):
        cells = []
        for n in names:
            v = rows[step].get(n)
            cells.append(f"{v[0] - bicubic:+.2f} dB | {_share(v[1])}" if v else "– | –")
        print(f"| {step} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
