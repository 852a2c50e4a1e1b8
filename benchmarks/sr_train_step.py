"""Where a light N3Net-SR's training step goes, against the light VDSR (issue #50's equal-budget comparison).

One training step (forward, backward, AdamW) of batch 16 × 40² luma under bf16 autocast (as ``n3 train``'s
``precision = auto`` runs it) for: the light VDSR (depth 10, 32 features, BN), the light N3Net-SR (two VDSR blocks of
depth 5, 32 features, one N3 block with f_E / f_T of 32 features), the same with its aggregation replaced by a
stub that keeps f_E / f_T in the graph, and the same with f_E / f_T in bf16 (``precision = bf16-all``).
Alternating, best of two rounds of ``--steps`` steps after a warm-up.
Usage: python benchmarks/sr_train_step.py [--threads 1] [--steps 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor

from n3cli.devices import cpu_name
from n3cli.nn import n3, nets


def _stub(self: n3.N3Aggregation2d, x: Tensor, e: Tensor, log_t: Tensor, progress: object = None) -> Tensor:
    return x.float().repeat(1, self.k + 1, 1, 1) + 0.0 * (e.float().mean() + log_t.float().mean())


def _step(model: torch.nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (model(x) - y).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 40, 40, generator=gen), torch.rand(16, 1, 40, 40, generator=gen)
    vdsr = _step(nets.vdsr(depth=10, features=32, bn=True), x, y)
    n3sr = nets.n3net_sr(n_blocks=2, depth=5, features=32, embed_features=32)
    n3step = _step(n3sr, x, y)
    real = n3.N3Aggregation2d.forward

    def stubbed() -> None:
        n3.N3Aggregation2d.forward = _stub  # type: ignore[method-assign]
        try:
            n3step()
        finally:
            n3.N3Aggregation2d.forward = real  # type: ignore[method-assign]

    def bf16_cnns() -> None:
        blocks = [m for m in n3sr.modules() if isinstance(m, n3.N3Block2d)]
        for b in blocks:
            b.bf16_cnns_in_training = True
        try:
            n3step()
        finally:
            for b in blocks:
                b.bf16_cnns_in_training = False

    runs = {"VDSR-light": vdsr, "N3Net-SR-light": n3step, "N3Net-SR-light, aggregation stubbed": stubbed,
            "N3Net-SR-light, f_E / f_T in bf16": bf16_cnns}
    best = {name: float("inf") for name in runs}
    for f in runs.values():
        f()
    for _ in range(2):
        for name, f in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                f()
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads, bf16 autocast, batch 16 × 40²")
    for name, sec in best.items():
        print(f"{name:38s} {sec * 1e3:7.1f} ms  ratio {sec / best['VDSR-light']:.2f}")


if __name__ == "__main__":
    main()
