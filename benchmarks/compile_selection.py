"""The neighbour selection (Eqs. 8-10, k steps) eager vs torch.compile (inductor), inference, on this CPU.

Eager: :func:`n3cli.nn.knn._continuous_knn_no_grad` (what the image N3 block runs without autograd). Compiled: the
same arithmetic without its data-dependent fallbacks, through ``torch.compile(dynamic=True)``. Logits of a band of
query tiles at 1024² (4 bands of 1,640 queries × 225 candidates), k = 7. Prints the compile time, the largest
difference and the times (min of ``--repeat`` rounds of 5 calls each).
Usage: python benchmarks/compile_selection.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor

from n3cli.devices import cpu_name
from n3cli.nn.knn import _continuous_knn_no_grad


def selection(logits: Tensor, t: Tensor, k: int) -> Tensor:
    logits = logits / t
    outs = []
    for j in range(k):
        top_value, top = logits.max(dim=-1, keepdim=True)
        onehot = torch.zeros_like(logits).scatter_(-1, top, 1.0)
        w = torch.exp(logits - top_value) * (1 - onehot)
        others = w.sum(-1, keepdim=True)
        total = others + 1.0
        w = w / total
        if j + 1 < k:
            log_rest = torch.where(onehot > 0, torch.log(others) - torch.log(total), torch.log1p(-w))
            logits = logits + log_rest / t
        outs.append(w + onehot / total)
    return torch.stack(outs, -2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    alpha = -torch.rand(1, 4 * 1640, 225) * 20
    t = torch.rand(1, 4 * 1640, 1) * 0.5 + 0.05
    compiled = torch.compile(selection, dynamic=True)
    print(f"CPU {cpu_name()}, {args.threads} threads, torch {torch.__version__}")
    with torch.inference_mode():
        eager = _continuous_knn_no_grad(alpha, t, 7, "alpha")
        assert eager is not None
        t0 = time.perf_counter()
        fused = compiled(alpha, t, 7)
        print(f"compile: {time.perf_counter() - t0:.1f} s; largest difference {(eager - fused).abs().max().item():.1e}")
        fns: dict[str, Callable[[], object]] = {"eager": lambda: _continuous_knn_no_grad(alpha, t, 7, "alpha"),
                                                "compiled": lambda: compiled(alpha, t, 7)}
        best = {name: float("inf") for name in fns}
        for _ in range(args.repeat):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(5):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - t0) / 5)
    for name, s in best.items():
        print(f"{name:9s} {s * 1e3:7.1f} ms per call ({best['eager'] / s:.2f}× eager)")


if __name__ == "__main__":
    main()
