"""Inference of N3Net at this checkout against the same forward pass at another git revision, in one process.

The inference counterpart of ``train_ab.py``: ``n3cli/nn`` of revision REV is unpacked as a package of its own, and
DnCNN-17, this N3Net and REV's N3Net (the same weights) alternate pass by pass for ``--rounds`` rounds, gray, the path
``n3 denoise`` runs (BN folded, narrow convolutions in C, channels-last, freed memory kept, denormals flushed), at each
precision; medians and minima in s/MP, each N3Net's ratio to DnCNN-17, and the largest difference of the two N3Nets'
outputs.
Usage: python benchmarks/forward_ab.py --against REV [--threads 2] [--sizes 1024x1024] [--precision fp32 bf16]
    [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from speed import times_of  # type: ignore[import-not-found]
from torch import nn
from train_ab import nets_at  # type: ignore[import-not-found]

from n3cli.api import prepare_for_inference
from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.engine import autocast
from n3cli.nn.nets import dncnn, n3net


def prepared_at(nets: object, state: dict[str, torch.Tensor]) -> nn.Module:
    """REV's N3Net with ``state``, prepared for inference by REV's own fold and narrow-convolution swap."""
    package = nets.__name__.rsplit(".", 1)[0]  # type: ignore[attr-defined]
    fuse = importlib.import_module(f"{package}.fuse")
    narrow = importlib.import_module(f"{package}.narrow")
    model = nets.n3net()  # type: ignore[attr-defined]
    model.load_state_dict(state)
    model = narrow.use_narrow_convs(fuse.fold_batchnorm(model.eval()))
    return model.to(memory_format=torch.channels_last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="git revision to compare with (e.g. HEAD~1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", default=["1024x1024"])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    base, this = dncnn(), n3net()
    with tempfile.TemporaryDirectory() as tmp:
        old = prepared_at(nets_at(args.against, Path(tmp)), this.state_dict())
        models = {"DnCNN-17": prepare_for_inference(base, torch.device("cpu")),
                  "N3Net, this checkout": prepare_for_inference(this, torch.device("cpu")),
                  f"N3Net, {args.against}": old}
        print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds", flush=True)
        for precision in args.precision:
            for size in args.sizes:
                w, h = (int(v) for v in size.split("x"))
                x = torch.rand(1, 1, h, w).contiguous(memory_format=torch.channels_last)
                outputs: dict[str, torch.Tensor] = {}

                def run(name: str, m: nn.Module, x: torch.Tensor = x, precision: str = precision,
                        outputs: dict[str, torch.Tensor] = outputs) -> Callable[[], None]:
                    def fn() -> None:
                        with torch.inference_mode(), autocast(precision, torch.device("cpu")):
                            outputs[name] = m(x).float()
                    return fn

                times = times_of({name: run(name, m) for name, m in models.items()}, args.rounds)
                mp = w * h / 1e6
                names = list(models)
                diff = (outputs[names[1]] - outputs[names[2]]).abs().max().item()
                print(f"{precision} {size}: largest difference of the two N3Nets' outputs {diff:.3g}")
                base_med, base_min = statistics.median(times["DnCNN-17"]), min(times["DnCNN-17"])
                for name, ts in times.items():
                    med, low = statistics.median(ts), min(ts)
                    print(f"  {name:24s} median {med / mp:6.3f} s/MP  min {low / mp:6.3f}  ratio {med / base_med:.3f} "
                          f"(median) {low / base_min:.3f} (min)", flush=True)


if __name__ == "__main__":
    main()
