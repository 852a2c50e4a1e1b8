"""One N3 block's training forward + backward with its output in NCHW (then copied to channels-last, as before
session 48) against channels-last written directly (what the block path does now).

Batch 16 × 80², 8 channels, channels-last input and gradient (the local blocks' layout); the two alternate in one
process, medians and minima after two warm-up rounds.
Usage: python benchmarks/n3_block_layout.py [--threads 2] [--rounds 14]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.nn import n3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=14)
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads")
    torch.manual_seed(0)
    block = n3.N3Block2d(8).train().to(memory_format=torch.channels_last)
    x = torch.randn(16, 8, 80, 80).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(16, 64, 80, 80).contiguous(memory_format=torch.channels_last)
    direct = n3.N3Aggregation2d._blocks_to_pixels

    def nchw(self: n3.N3Aggregation2d, *a: Any, channels_last: bool = False) -> torch.Tensor:
        return direct(self, *a[:4], False)

    def step(old: bool) -> float:
        n3.N3Aggregation2d._blocks_to_pixels = nchw if old else direct  # type: ignore[method-assign]
        t0 = time.perf_counter()
        block(x).contiguous(memory_format=torch.channels_last).backward(g)
        dt = time.perf_counter() - t0
        x.grad = None
        block.zero_grad(set_to_none=True)
        return dt

    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(args.rounds):
            for old in (True, False):
                times[old].append(step(old))
    finally:
        n3.N3Aggregation2d._blocks_to_pixels = direct  # type: ignore[method-assign]
    for old, label in ((True, "NCHW output, then copied"), (False, "channels-last output")):
        ts = times[old][2:]
        print(f"{label:26s} median {statistics.median(ts) * 1e3:7.1f} ms  min {min(ts) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
