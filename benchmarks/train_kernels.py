"""The C kernels inside N3Net's training step, and the narrow convolutions' training passes against oneDNN.

1. One training step (batch 16 × 80², 3 input planes, AdamW; ``--precision``), timed whole and around every call
   into :mod:`n3cli.nn.native` (median of ``--steps`` after two warm-ups): how long the step spends in C, per kernel.
2. Each narrow convolution (64 → 8 / 4 / 3 / 1) on a 16 × 64 × 80² batch, forward alone and forward + backward, as
   :class:`n3cli.nn.narrow.NarrowConv2d` (C) and as ``nn.Conv2d`` (oneDNN), median of 9.

Whether the kernels run on torch's OpenMP threads or on the Python pool is printed (``native._torch_team()``);
``--pool`` forces the pool. Usage: python benchmarks/train_kernels.py [--threads 2] [--steps 5] [--precision fp32]
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from speed import training_step  # type: ignore[import-not-found]

from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.nn import native
from n3cli.nn.narrow import use_narrow_convs

KERNELS = ("knn_forward", "knn_backward", "spread_whole", "spread_whole_backward", "blocks_to_pixels",
           "blocks_to_pixels_backward", "distance_norm", "distance_norm_backward", "conv3x3_narrow",
           "conv3x3_narrow_wgrad")


def _median_ms(fn: Callable[[], object], n: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def kernels_in_step(precision: str, steps: int) -> None:
    spent: dict[str, float] = collections.defaultdict(float)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return call

    originals = {name: getattr(native, name) for name in KERNELS}
    for name, fn in originals.items():
        setattr(native, name, timed(name, fn))
    try:
        step = training_step("n3net", False, precision)
        whole = _median_ms(step, steps)
        spent.clear()
        for _ in range(steps):
            step()
    finally:
        for name, fn in originals.items():
            setattr(native, name, fn)
    per_step = {name: 1e3 * t / steps for name, t in spent.items()}
    print(f"N3Net training step {precision}: {whole:.0f} ms; in C kernels {sum(per_step.values()):.1f} ms: "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])))


def narrow_layers() -> None:
    cl = torch.channels_last
    for cout in (8, 4, 3, 1):
        ref = torch.nn.Conv2d(64, cout, 3, padding=1).to(memory_format=cl)
        fast = use_narrow_convs(torch.nn.Sequential(copy.deepcopy(ref)))[0]
        x = torch.rand(16, 64, 80, 80).contiguous(memory_format=cl).requires_grad_()
        g = torch.rand(16, cout, 80, 80).contiguous(memory_format=cl)
        row = []
        for name, conv in (("C", fast), ("oneDNN", ref)):
            with torch.no_grad():
                forward = _median_ms(lambda conv=conv, x=x: conv(x), 9)
            both = _median_ms(lambda conv=conv, x=x, g=g: conv(x).backward(g), 9)
            row.append(f"{name} forward {forward:5.2f} ms, forward + backward {both:5.2f} ms")
        print(f"64->{cout}: " + "; ".join(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--pool", action="store_true", help="run the kernels on the Python pool, not torch's threads")
    args = ap.parse_args()
    keep_freed_memory()  # as n3 train runs
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.pool:
        native._torch_team = lambda: False  # type: ignore[method-assign]
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads; kernels on "
          f"{'torch OpenMP threads' if native._torch_team() else 'the Python pool'}")
    for precision in args.precision:
        kernels_in_step(precision, args.steps)
    narrow_layers()


if __name__ == "__main__":
    main()
