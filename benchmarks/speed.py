"""N3Net against DnCNN-17 on the CPU, with the N3 block's original implementation and the block one.

Inference: gray images, fp32, the path ``n3 denoise`` runs (BN folded, channels-last, inference mode),
seconds per megapixel and the N3Net / DnCNN-17 ratio. Training: one step (forward, backward, AdamW) on a
batch of 16 × 80² as ``n3 train`` draws it (the default denoiser: 3 input planes). All models of one
measurement alternate in one process (min of ``--repeat`` runs each), so that the ratios compare like
with like on a shared machine. The old block is the same module with ``reference = True``.
Usage: python benchmarks/speed.py [--threads 2] [--sizes 481x321 1024x1024] [--precision fp32 bf16] [--repeat 3]
[--steps 3] [--no-old-block]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import ModuleType

import torch

from n3cli.api import prepare_for_inference
from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.engine import autocast
from n3cli.nn.n3 import set_bf16_cnns_in_training
from n3cli.nn.nets import N3Net, dncnn, n3net
from n3cli.train.config import TrainConfig
from n3cli.train.optim import dncnn_init, make_optimizer, param_groups
from n3cli.train.trainer import build_model


def set_reference(model: torch.nn.Module, reference: bool) -> None:
    for m in model.modules():
        if hasattr(m, "reference"):
            m.reference = reference


def times_of(fns: dict[str, Callable[[], None]], repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Runs each function ``warmup`` times, then ``repeat`` rounds alternating them; the seconds of every timed run."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def best_of(fns: dict[str, Callable[[], None]], repeat: int) -> dict[str, float]:
    """Runs each function once to warm up, then ``repeat`` rounds alternating them; min seconds of each."""
    return {name: min(ts) for name, ts in times_of(fns, repeat).items()}


def inference(sizes: list[str], repeat: int, precision: str = "fp32", old_block: bool = True) -> None:
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as n3 runs its models
    models: dict[str, N3Net] = {
        "dncnn": prepare_for_inference(dncnn(), torch.device("cpu")),
        "n3net": prepare_for_inference(n3net(), torch.device("cpu")),
    }
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        x = torch.rand(1, 1, h, w).contiguous(memory_format=torch.channels_last)

        def run(name: str, reference: bool | None = None, x: torch.Tensor = x) -> Callable[[], None]:
            def fn() -> None:
                if reference is not None:
                    set_reference(models[name], reference)
                with torch.inference_mode(), autocast(precision, torch.device("cpu")):
                    models[name](x)
            return fn

        fns = {"DnCNN-17": run("dncnn"), "N3Net (new block)": run("n3net", False)}
        if old_block:
            fns["N3Net (old block)"] = run("n3net", True)
        t = best_of(fns, repeat)
        mp = h * w / 1e6
        for name, sec in t.items():
            print(f"inference {size} {precision}: {name:18s} {sec:7.3f} s  {sec / mp:7.3f} s/MP  "
                  f"ratio to DnCNN-17 {sec / t['DnCNN-17']:.2f}", flush=True)


def training_step(arch: str, reference: bool | None, precision: str = "fp32", batch: int = 16, patch: int = 80,
                  in_planes: int = 3, bf16_cnns: bool = False, nets: ModuleType | None = None) -> Callable[[], None]:
    """One training step (forward, backward, AdamW) of ``arch`` on a fixed random batch, as a callable.
    ``bf16_cnns``: the N3 blocks' embedding and temperature CNNs in bf16 too (``n3 train --set precision=bf16-all``).
    ``nets``: a module whose builder ``arch`` makes the model (another revision's ``n3cli.nn.nets``:
    ``benchmarks/train_ab.py``) instead of the run's ``build_model``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, in_planes, patch, patch, generator=gen)
    target = torch.rand(batch, 1, patch, patch, generator=gen)
    cfg = TrainConfig(out="-", data=[], arch=arch, optimizer="adamw", schedule="cosine")
    model = build_model(cfg, in_planes) if nets is None else getattr(nets, arch)(in_channels=in_planes)
    dncnn_init(model, torch.Generator().manual_seed(0))
    model = model.to(memory_format=torch.channels_last).train()
    if reference is not None:
        set_reference(model, reference)
    set_bf16_cnns_in_training(model, bf16_cnns)
    opt = make_optimizer(cfg, param_groups(model, cfg.weight_decay))

    def step() -> None:
        with autocast(precision, torch.device("cpu")):  # bf16: the local CNNs only, as n3 train runs them
            loss = (model(x) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def training(steps: int, batch: int = 16, patch: int = 80, in_planes: int = 3, precision: str = "fp32") -> None:
    def make(arch: str, reference: bool | None) -> Callable[[], None]:
        return training_step(arch, reference, precision, batch, patch, in_planes)

    t = best_of({"DnCNN-17": make("dncnn", None), "N3Net (old block)": make("n3net", True),
                 "N3Net (new block)": make("n3net", False)}, steps)
    for name, sec in t.items():
        print(f"training step {batch}x{patch}² {precision}: {name:18s} {sec:7.3f} s  "
              f"ratio to DnCNN-17 {sec / t['DnCNN-17']:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="*", default=["481x321", "1024x1024"])
    ap.add_argument("--repeat", type=int, default=3, help="timed inference runs per model (after a warm-up)")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per model (0: no training)")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="arithmetic of the local CNNs in inference (n3's auto is bf16 where native)")
    ap.add_argument("--no-old-block", action="store_true", help="skip the original N3 block implementation")
    ap.add_argument("--train-precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="arithmetic of the local CNNs in the training step (n3 train's auto is bf16 where native)")
    args = ap.parse_args()
    keep_freed_memory()  # as the n3 command runs (N3_MALLOC=system: malloc's defaults)
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; {args.threads} thread(s)", flush=True)
    for precision in args.precision if args.sizes else []:
        inference(args.sizes, args.repeat, precision, not args.no_old_block)
    for precision in args.train_precision if args.steps else []:
        training(args.steps, precision=precision)


if __name__ == "__main__":
    main()
