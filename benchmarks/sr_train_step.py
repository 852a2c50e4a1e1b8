"""Where a light N3Net-SR's training step goes, against the light VDSR (issue #50's equal-budget comparison).

One training step (forward, backward, AdamW) of batch 16 × 40² luma under bf16 autocast (as ``n3 train``'s
``precision = auto`` runs it) for: the light VDSR (depth 10, 32 features, BN), the light N3Net-SR (two VDSR blocks of
depth 5, 32 features, one N3 block with f_E / f_T of 32 features), the same with its aggregation replaced by a
stub that keeps f_E / f_T in the graph, and the same with f_E / f_T in bf16 (``precision = bf16-all``).
Alternating (``speed.best_of``), best of two rounds of ``--steps`` steps after a warm-up round.
Usage: python benchmarks/sr_train_step.py [--threads 1] [--steps 20]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from speed import best_of  # type: ignore[import-not-found]
from torch import Tensor
from train_floor import aggregation_stubbed  # type: ignore[import-not-found]

from n3cli.devices import cpu_name
from n3cli.nn import nets
from n3cli.nn.n3 import set_bf16_cnns_in_training


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

    def bf16_cnns() -> None:
        set_bf16_cnns_in_training(n3sr, True)
        try:
            n3step()
        finally:
            set_bf16_cnns_in_training(n3sr, False)

    runs = {"VDSR-light": vdsr, "N3Net-SR-light": n3step,
            "N3Net-SR-light, aggregation stubbed": aggregation_stubbed(n3step),
            "N3Net-SR-light, f_E / f_T in bf16": bf16_cnns}

    def steps(f: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(args.steps):
                f()
        return run

    best = {name: sec / args.steps for name, sec in best_of({n: steps(f) for n, f in runs.items()}, 2).items()}
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads, bf16 autocast, batch 16 × 40²")
    for name, sec in best.items():
        print(f"{name:38s} {sec * 1e3:7.1f} ms  ratio {sec / best['VDSR-light']:.2f}")


if __name__ == "__main__":
    main()
