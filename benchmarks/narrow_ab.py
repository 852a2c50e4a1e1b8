"""Inference with and without the C kernel for narrow convolutions (:class:`n3cli.nn.narrow.NarrowConv2d`), DnCNN-17
and N3Net alternating in one process, gray, the path ``n3 denoise`` runs (BN folded, channels-last).

Usage: python benchmarks/narrow_ab.py [--threads 2] [--sizes 1024x1024] [--precision fp32 bf16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from n3cli.api import prepare_for_inference
from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.engine import autocast
from n3cli.nn.narrow import NarrowConv2d
from n3cli.nn.nets import dncnn, n3net

sys.path.insert(0, str(Path(__file__).parent))
from speed import times_of  # noqa: E402


def without_narrow(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, NarrowConv2d):
            m.__class__ = nn.Conv2d
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", default=["1024x1024"])
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    keep_freed_memory()  # as the n3 command runs
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; {args.threads} thread(s)", flush=True)
    torch.manual_seed(0)
    models = {}
    for name, build in (("DnCNN-17", dncnn), ("N3Net", n3net)):
        fast = prepare_for_inference(build(), torch.device("cpu"))
        models[f"{name}, narrow in C"] = fast
        models[f"{name}, oneDNN"] = without_narrow(fast)
    for precision in args.precision:
        for size in args.sizes:
            w, h = (int(v) for v in size.split("x"))
            x = torch.rand(1, 1, h, w).contiguous(memory_format=torch.channels_last)

            def run(m: nn.Module, x: torch.Tensor = x, precision: str = precision) -> Callable[[], None]:
                def fn() -> None:
                    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
                        m(x)
                return fn

            t = {k: min(v) for k, v in times_of({k: run(m) for k, m in models.items()}, args.repeat).items()}
            mp = h * w / 1e6
            for k, sec in t.items():
                print(f"{precision} {size}: {k:22s} {sec:7.3f} s  {sec / mp:6.3f} s/MP", flush=True)
            for variant in ("narrow in C", "oneDNN"):
                print(f"{precision} {size}: ratio N3Net / DnCNN-17, {variant}: "
                      f"{t[f'N3Net, {variant}'] / t[f'DnCNN-17, {variant}']:.3f}", flush=True)


if __name__ == "__main__":
    main()
