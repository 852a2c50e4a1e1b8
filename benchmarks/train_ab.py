"""The training step of N3Net at this checkout against the same step at another git revision, in one process.

Whole-step figures from separate processes move by ±3 % on a shared 2-core machine, more than most single changes
to the N3 block gain. Here ``n3cli/nn`` of revision REV is unpacked into a temporary folder as a package of its own
(it imports only itself and torch) and DnCNN-17, this N3Net and REV's N3Net alternate step by step for ``--rounds``
rounds (batch 16 × 80², 3 input planes, fp32, AdamW, freed memory kept as ``n3 train`` does); medians and minima,
and each N3Net's ratio to DnCNN-17.
Usage: python benchmarks/train_ab.py --against REV [--threads 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.nn import nets
from n3cli.train.config import TrainConfig
from n3cli.train.optim import dncnn_init, make_optimizer, param_groups


def nets_at(rev: str, folder: Path) -> ModuleType:
    """``n3cli.nn.nets`` as of git revision ``rev``, importable as ``n3nn_<rev>.nets``."""
    name = "n3nn_" + "".join(ch if ch.isalnum() else "_" for ch in rev)
    root = Path(__file__).resolve().parents[1]  # the checkout this script belongs to, wherever it is run from
    blob = subprocess.run(["git", "archive", rev, "n3cli/nn"], cwd=root, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "n3cli" / "nn").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{name}.nets")


def training_step(module: ModuleType, arch: str, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    cfg = TrainConfig(out="-", data=[], arch=arch, optimizer="adamw", schedule="cosine")
    model = getattr(module, arch)(in_channels=x.shape[1])
    dncnn_init(model, torch.Generator().manual_seed(0))
    model = model.to(memory_format=torch.channels_last).train()
    opt = make_optimizer(cfg, param_groups(model, cfg.weight_decay))

    def step() -> None:
        loss = (model(x) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="git revision to compare with (e.g. HEAD~1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(0)
    x, target = torch.rand(16, 3, 80, 80, generator=gen), torch.rand(16, 1, 80, 80, generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        old = nets_at(args.against, Path(tmp))
        fns = {"DnCNN-17": training_step(nets, "dncnn", x, target),
               "N3Net, this checkout": training_step(nets, "n3net", x, target),
               f"N3Net, {args.against}": training_step(old, "n3net", x, target)}
        for fn in fns.values():
            fn()
            fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds")
    base_med, base_min = statistics.median(times["DnCNN-17"]), min(times["DnCNN-17"])
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        print(f"{name:28s} median {med:6.3f} s  min {low:6.3f} s  ratio {med / base_med:.3f} (median) "
              f"{low / base_min:.3f} (min)")


if __name__ == "__main__":
    main()
