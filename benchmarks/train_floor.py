"""What the N3 aggregation costs in a training step, against the rest of N3Net and DnCNN-17.

One training step (forward, backward, AdamW) of batch 16 × 80² with 3 input planes, as ``benchmarks/speed.py``
times it: DnCNN-17, N3Net, and N3Net with each aggregation replaced by a stub of the same output shape that keeps
the embedding and temperature networks in the graph (so their backward still runs): the step's floor however
fast the aggregation's forward and backward. With ``--precision bf16`` also N3Net with the N3 blocks' embedding and
temperature CNNs in bf16 (``n3 train --set precision=bf16-all``; by default they train in float32).
Alternating in one process, min of ``--steps`` after a warm-up; freed memory kept for reuse, as ``n3 train`` runs.
Usage: python benchmarks/train_floor.py [--threads 2] [--steps 3] [--precision fp32]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from speed import best_of, training_step  # type: ignore[import-not-found]
from torch import Tensor

from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.nn import n3


def _stub(self: n3.N3Aggregation2d, x: Tensor, e: Tensor, log_t: Tensor, progress: object = None) -> Tensor:
    return x.float().repeat(1, self.k + 1, 1, 1) + 0.0 * (e.float().mean() + log_t.float().mean())


def aggregation_stubbed(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with every N3 aggregation replaced by :func:`_stub` while it runs."""
    def run() -> None:
        real = n3.N3Aggregation2d.forward
        n3.N3Aggregation2d.forward = _stub  # type: ignore[method-assign]
        try:
            step()
        finally:
            n3.N3Aggregation2d.forward = real  # type: ignore[method-assign]
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    keep_freed_memory()  # as the n3 command trains (N3_MALLOC=system: malloc's defaults)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads, {args.precision}")
    dncnn, net = training_step("dncnn", None, args.precision), training_step("n3net", False, args.precision)
    stubbed = aggregation_stubbed(training_step("n3net", False, args.precision))
    runs = {"DnCNN-17": dncnn, "N3Net": net, "N3Net, aggregation stubbed": stubbed}
    if args.precision == "bf16":  # n3 train --set precision=bf16-all
        runs["N3Net, f_E / f_T in bf16"] = training_step("n3net", False, args.precision, bf16_cnns=True)
    t = best_of(runs, args.steps)
    for name, sec in t.items():
        print(f"training step 16x80² {args.precision}: {name:28s} {sec:7.3f} s  ratio {sec / t['DnCNN-17']:.2f}")
    agg = t["N3Net"] - t["N3Net, aggregation stubbed"]
    print(f"the two aggregations, forward + backward: {agg:.3f} s ({agg / t['DnCNN-17']:.2f}× a DnCNN-17 step)")


if __name__ == "__main__":
    main()
