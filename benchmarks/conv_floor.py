"""How much of N3Net's time is the N3 aggregation, and what its convolutions alone cost against DnCNN-17.

Times, in one process, alternating (min of ``--repeat`` after a warm-up), on a gray ``--side``² image through the
path ``n3 denoise`` runs (BN folded, channels-last, inference mode, denormals flushed):
DnCNN-17, the shipped ``n3net-nlf`` (with the fused C aggregation where it could be built, and with the PyTorch
one), and the same N3Net with each aggregation replaced by a stub of the same output shape (x repeated k + 1
times): the convolutions' floor, the ratio N3Net can reach however fast the aggregation.
fp32 and bf16 autocast. Usage: python benchmarks/conv_floor.py [--side 1024] [--threads 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor

from n3cli import api
from n3cli.devices import cpu_name, keep_freed_memory
from n3cli.engine import autocast
from n3cli.nn import n3, native
from n3cli.nn.nets import dncnn


def _stub(self: n3.N3Aggregation2d, x: Tensor, e: Tensor, log_t: Tensor, progress: object = None) -> Tensor:
    return x.float().repeat(1, self.k + 1, 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    keep_freed_memory()  # as the n3 command runs (N3_MALLOC=system: malloc's defaults)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cpu = torch.device("cpu")
    net = api.load_model("n3net-nlf", "denoise", cpu, precision="fp32").model
    plain = api.prepare_for_inference(dncnn(), cpu)
    x = torch.rand(1, 1, args.side, args.side).contiguous(memory_format=torch.channels_last)
    level = torch.tensor([[0.0, (25 / 255) ** 2]])
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} threads, gray {args.side}², s per forward")
    real_forward = n3.N3Aggregation2d.forward

    aggregations = [m for m in net.modules() if isinstance(m, n3.N3Aggregation2d)]
    print(f"fused C aggregation: {'built' if native.available() else 'not available (PyTorch only)'}")

    def run(fn: Callable[[], object], precision: str, stub: bool, fused: bool = True) -> Callable[[], None]:
        def call() -> None:
            n3.N3Aggregation2d.forward = _stub if stub else real_forward  # type: ignore[method-assign]
            for m in aggregations:
                m.native = fused
            try:
                with torch.inference_mode(), autocast(precision, cpu):
                    fn()
            finally:
                n3.N3Aggregation2d.forward = real_forward  # type: ignore[method-assign]
                for m in aggregations:
                    m.native = True
        return call

    for precision in ("fp32", "bf16"):
        fns = {"DnCNN-17": run(lambda: plain(x), precision, False),
               "N3Net": run(lambda: net(x, level), precision, False),
               "N3Net, PyTorch aggregation": run(lambda: net(x, level), precision, False, fused=False),
               "N3Net, aggregation stubbed": run(lambda: net(x, level), precision, True)}
        for fn in fns.values():
            fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeat):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {name: min(ts) for name, ts in times.items()}
        base = best["DnCNN-17"]
        for name, t in best.items():
            print(f"{precision}  {name:30s} {t:7.3f} s  ({t / base:.2f}× DnCNN-17)")
        for name in ("N3Net", "N3Net, PyTorch aggregation"):
            agg = best[name] - best["N3Net, aggregation stubbed"]
            print(f"{precision}  two aggregations of {name:28s} {agg:7.3f} s  ({agg / base:.2f}× DnCNN-17)")


if __name__ == "__main__":
    main()
