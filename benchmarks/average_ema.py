"""Average the weight averages (`ema`) of two `n3 train` checkpoints into a new checkpoint.

    python benchmarks/average_ema.py A.pt B.pt -o OUT.pt
    n3 weights export OUT.pt -o avg.safetensors --name avg --ema --precise-bn 100

The output is a copy of B with its `ema` replaced by the mean of both (integer buffers such as BN batch counters
are B's); BN statistics must be recomputed on export (`--precise-bn`), as for any weight average.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    a = torch.load(args.a, weights_only=True, map_location="cpu")
    b = torch.load(args.b, weights_only=True, map_location="cpu")
    if a.get("ema") is None or b.get("ema") is None:
        raise SystemExit("both checkpoints need a weight average (trained with --ema)")
    if a["ema"].keys() != b["ema"].keys():
        raise SystemExit("the checkpoints hold different architectures")
    out = dict(b)
    out["ema"] = {k: (v + a["ema"][k]) / 2 if v.is_floating_point() else v for k, v in b["ema"].items()}
    if args.out.exists():
        raise SystemExit(f"{args.out} exists")
    torch.save(out, args.out)
    print(f"{args.out}: mean of the averages at steps {a['step']} and {b['step']}")


if __name__ == "__main__":
    main()
