"""Seconds per training step (forward, backward, optimizer) of a model, eager against ``torch.compile``.

A synthetic batch shaped as ``n3 train`` draws it (default: the default denoiser, N3Net with the noise
level planes, batch 16 × 80²). Eager and compiled steps alternate in one process, so that both see the
same machine state; compilation time is reported separately and not counted in the step times.
Usage: python benchmarks/train_step.py [--arch n3net] [--threads 2] [--steps 6] [--modes eager compiled]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from n3cli.train.config import TrainConfig
from n3cli.train.optim import dncnn_init, make_optimizer, param_groups
from n3cli.train.trainer import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="n3net")
    ap.add_argument("--in-planes", type=int, default=3, help="1 + the 2 NLF planes of the default denoiser")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=80)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per mode (after 2 warm-up steps)")
    ap.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(out="-", data=[], arch=args.arch, optimizer="adamw", schedule="cosine")
    gen = torch.Generator().manual_seed(0)
    base = build_model(cfg, args.in_planes)
    dncnn_init(base, gen)
    base = base.to(memory_format=torch.channels_last)
    x = torch.rand(args.batch, args.in_planes, args.patch, args.patch, generator=gen)
    target = torch.rand(args.batch, 1, args.patch, args.patch, generator=gen)

    runners = {}
    for mode in args.modes:
        model = copy.deepcopy(base).train()
        opt = make_optimizer(cfg, param_groups(model, cfg.weight_decay))
        net = torch.compile(model) if mode == "compiled" else model

        def step(net: torch.nn.Module = net, opt: torch.optim.Optimizer = opt) -> float:
            t0 = time.perf_counter()
            loss = (net(x) - target).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        step()
        print(f"{mode}: first step (incl. compilation) {time.perf_counter() - t0:.1f} s", flush=True)
        step()
        runners[mode] = step
    times: dict[str, list[float]] = {m: [] for m in runners}
    for _ in range(args.steps):
        for mode, step in runners.items():
            times[mode].append(step())
    for mode, ts in times.items():
        print(f"{mode}: median {statistics.median(ts):.2f} s per step "
              f"({', '.join(f'{t:.2f}' for t in ts)})")
    if len(times) == 2:
        ratio = statistics.median(times["eager"]) / statistics.median(times["compiled"])
        print(f"eager / compiled: {ratio:.2f}x")


if __name__ == "__main__":
    main()
