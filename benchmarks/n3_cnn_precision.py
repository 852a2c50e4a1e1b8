"""Which parts of the N3 blocks' embedding and temperature CNNs may train in bfloat16? Gradients against float64.

Takes a training checkpoint, draws one training batch of its task, and compares the loss gradient of every
parameter group with the float64 one (cosine and relative error), for three ways of training in bf16:

* ``fp32-n3``: the local CNNs in bf16 (autocast), the N3 blocks' f_E and f_T CNNs and the aggregation in float32;
* ``bf16-hidden``: f_E and f_T in bf16 except their last convolution (the embedding and log-temperature
  themselves are computed in float32 from bf16 features), the aggregation in float32;
* ``bf16-n3``: f_E and f_T wholly in bf16 (the embedding rounded to bf16), the aggregation in float32;

plus plain float32 (``fp32``) for scale. Also times one training step (forward, backward) of each and gives its
loss relative to the float64 one (does bf16 put a floor under the loss?).

    OMP_NUM_THREADS=1 python benchmarks/n3_cnn_precision.py runs/denoise-nlf-logits/last.pt
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from n3cli.nn import n3  # noqa: E402
from n3cli.train import checkpoint  # noqa: E402
from n3cli.train.config import TrainConfig  # noqa: E402
from n3cli.train.data import ImageBank  # noqa: E402
from n3cli.train.tasks import task_for  # noqa: E402
from n3cli.train.trainer import build_model  # noqa: E402

MODES = ("fp32", "fp32-n3", "bf16-hidden", "bf16-n3")


def _group(name: str) -> str:
    return "f_E" if ".embedcnn." in name else "f_T" if ".tempcnn." in name else "local"


def main() -> int:
    torch.set_num_threads(1)
    state = checkpoint.load(Path(sys.argv[1]))
    cfg = TrainConfig(**state["train_config"])
    task = task_for(cfg.task, cfg.noise, cfg.patch)
    model = build_model(cfg, task.in_planes, task.noise_inputs, task.channels)
    model.load_state_dict(state["model"])
    model.train()
    gen = torch.Generator().manual_seed(5)
    bank = ImageBank(cfg.data, min_size=1, luma=getattr(task, "luma", "L"))
    batch = task.batch(bank.crops(16, task.crop_size(cfg.patch), gen), gen)
    weights = task.loss_weights(batch)
    print(f"{sys.argv[1]} (step {state['step']}), batch 16 of {cfg.patch}², task {cfg.task}")

    policy = {"mode": "fp32-n3"}
    real_forward = n3.N3Block2d.forward

    def forward(self: n3.N3Block2d, x: Tensor, guide: Tensor | None = None) -> Tensor:
        self.bf16_cnns_in_training = policy["mode"] == "bf16-n3"
        if policy["mode"] != "bf16-hidden" or not torch.is_autocast_enabled("cpu"):
            return real_forward(self, x, guide)
        stacks: list[nn.Sequential] = [self.embedcnn, self.tempcnn]
        hidden = [s[:-1](x) for s in stacks]
        with torch.autocast("cpu", enabled=False):
            e, log_t = (s[-1](h.float()) for s, h in zip(stacks, hidden, strict=True))
        with torch.autocast("cpu", enabled=False):
            return self.n3aggregation(x.float(), e.float(), log_t.float())

    n3.N3Block2d.forward = forward  # type: ignore[method-assign]

    def grads(mode: str) -> tuple[dict[str, Tensor], float, float]:
        m = copy.deepcopy(model)
        dtype = torch.float64 if mode == "ref" else torch.float32
        m = m.to(dtype)
        policy["mode"] = mode
        ins = [t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t for t in batch.inputs]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode not in ("ref", "fp32")):
            out = m(*ins)
        diff = out.double() - batch.target.double()
        loss = (diff.square().mean(dim=(1, 2, 3)) * weights.double()).mean()
        loss.backward()
        took = time.perf_counter() - start
        return {n: p.grad.double() for n, p in m.named_parameters() if p.grad is not None}, took, float(loss.detach())

    ref, _, ref_loss = grads("ref")
    groups = sorted({_group(n) for n in ref})
    header = "  ".join(f"{g + ' cos':>10s} {g + ' rel':>10s}" for g in groups)
    print(f"{'mode':12s} {header}   step (s)   loss / float64 loss")
    for mode in MODES:
        g, took, loss = grads(mode)
        cells = []
        for grp in groups:
            names = [n for n in ref if _group(n) == grp]
            a = torch.cat([ref[n].flatten() for n in names])
            b = torch.cat([g[n].flatten() for n in names])
            cos = float(a @ b / (a.norm() * b.norm()))
            cells.append(f"{cos:10.4f} {float((a - b).norm() / a.norm()):10.4f}")
        print(f"{mode:12s} " + "  ".join(cells) + f"   {took:7.3f}   {loss / ref_loss:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
