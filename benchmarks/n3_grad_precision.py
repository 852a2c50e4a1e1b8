"""Precision of float32 gradients through an N3 aggregation, against float64, on a real training batch.

Takes a training checkpoint, runs a denoising batch through it, captures the input of the first N3
block, and compares the float32 gradients of a fixed random projection of the aggregation's output
with respect to its inputs (block input x, embedding e, log-temperature) with float64 ones; once with
the distance norm in training mode (batch statistics) and once in eval mode (running statistics).

    OMP_NUM_THREADS=1 python benchmarks/n3_grad_precision.py runs/denoise-nlf-n3net/last.pt
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from n3cli.nn.n3 import N3Block2d  # noqa: E402
from n3cli.train import checkpoint  # noqa: E402
from n3cli.train.config import TrainConfig  # noqa: E402
from n3cli.train.data import ImageBank  # noqa: E402
from n3cli.train.tasks import NoiseSpec, denoise_batch  # noqa: E402
from n3cli.train.trainer import build_model  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    state = checkpoint.load(Path(sys.argv[1]))
    cfg = TrainConfig(**state["train_config"])
    spec = NoiseSpec.parse(cfg.noise)
    model = build_model(cfg, spec.in_planes, spec.in_planes - 1)
    model.load_state_dict(state["model"])
    model.train()
    gen = torch.Generator().manual_seed(5)
    batch = denoise_batch(ImageBank(cfg.data, min_size=1).crops(4, cfg.patch, gen), spec, gen)
    block = next(m for m in model.modules() if isinstance(m, N3Block2d))
    seen: dict[str, torch.Tensor] = {}
    hook = block.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0].detach()))
    with torch.no_grad():
        model(*batch.inputs)
        hook.remove()
        xin = seen["x"]
        e0, t0 = block.embedcnn(xin), block.tempcnn(xin)
    agg = block.n3aggregation
    proj = torch.randn(xin.shape[0], (agg.k + 1) * xin.shape[1], *xin.shape[-2:],
                       generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grads(dtype: torch.dtype) -> list[torch.Tensor]:
        a = copy.deepcopy(agg).to(dtype)
        ins = [v.detach().clone().to(dtype).requires_grad_() for v in (xin, e0, t0)]
        (a(*ins) * proj.to(dtype)).sum().backward()
        return [v.grad.double() for v in ins if v.grad is not None]

    print(f"{sys.argv[1]} (step {state['step']}): log-temperature mean {t0.mean():.2f}, embedding std {e0.std():.4f}")
    for mode in ("train", "eval"):
        agg.bn.train(mode == "train")
        ref, low = grads(torch.float64), grads(torch.float32)
        errs = "  ".join(f"{n}: {float((a - b).norm() / a.norm()):.4f}"
                         for n, a, b in zip(("x", "e", "log_t"), ref, low, strict=True))
        print(f"distance norm in {mode} mode: relative error of float32 gradients  {errs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
