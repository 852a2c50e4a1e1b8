"""Time of single 3×3 convolutions of the shapes N3Net uses, on this CPU (channels-last, inference).

Shows that narrow convolutions (64→1, 64→8, 8→64) cost far more than their share of multiply-adds, and what
merging the embedding and temperature CNNs into grouped convolutions would cost. fp32 and bf16 autocast.
Usage: python benchmarks/narrow_convs.py [--threads 2] [--side 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from n3cli.devices import cpu_name

SHAPES = [(64, 64, 1), (64, 1, 1), (64, 8, 1), (8, 64, 1), (8, 128, 1), (128, 128, 2), (128, 16, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cl = torch.channels_last
    print(f"CPU {cpu_name()}, {args.threads} threads, {args.side}², ms per convolution (min of {args.repeat})")
    for precision in ("fp32", "bf16"):
        ctx = (torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
        for cin, cout, groups in SHAPES:
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1, groups=groups).eval().to(memory_format=cl)
            x = torch.randn(1, cin, args.side, args.side).contiguous(memory_format=cl)
            with torch.inference_mode(), ctx:
                conv(x)
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    conv(x)
                    times.append(time.perf_counter() - t0)
            macs = cin * cout // groups * 9 * args.side ** 2
            best = min(times)
            rate = macs / best / 1e9
            print(f"{precision}  {cin:3d}→{cout:<3d} groups {groups}  {best * 1e3:7.1f} ms  {rate:5.1f} GMAC/s")


if __name__ == "__main__":
    main()
