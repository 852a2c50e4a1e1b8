"""Compare two training runs step by step from their ``log.jsonl`` files.

Runs started with the same seed draw the same crops and noise at every step, so their training losses
are paired: the table gives, per window of steps, each run's mean loss (as PSNR on the training
batches, 10·log10(1/MSE)) and the validation PSNRs both logged, up to the last step both reached.

    python benchmarks/compare_logs.py runs/denoise-nlf-n3net/log.jsonl runs/denoise-nlf-adamw/log.jsonl --window 50
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def read(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    """(step -> mean training loss of the logging window ending there, step -> first validation PSNR)."""
    loss: dict[int, float] = {}
    val: dict[int, float] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            loss.setdefault(r["step"], r["loss"])
        elif "val_psnr" in r:
            val.setdefault(r["step"], r["val_psnr"])
    return loss, val


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--window", type=int, default=50)
    args = ap.parse_args()
    (la, va), (lb, vb) = read(args.a), read(args.b)
    common = sorted(set(la) & set(lb))
    if not common:
        print("no common logged steps")
        return 1
    print(f"| steps | {args.a.parent.name}: train PSNR | {args.b.parent.name}: train PSNR | Δ | val A | val B |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    start = 0
    while start < common[-1]:
        end = start + args.window
        steps = [s for s in common if start < s <= end]
        if steps:
            ma = sum(la[s] for s in steps) / len(steps)
            mb = sum(lb[s] for s in steps) / len(steps)
            pa, pb = -10 * math.log10(ma), -10 * math.log10(mb)
            vals = [s for s in sorted(set(va) & set(vb)) if start < s <= end]
            v = f"{va[vals[-1]]:.3f} | {vb[vals[-1]]:.3f}" if vals else "– | –"
            print(f"| {start + 1}–{min(end, common[-1])} | {pa:.3f} | {pb:.3f} | {pb - pa:+.3f} | {v} |")
        start = end
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
