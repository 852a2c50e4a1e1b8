"""What the N3 blocks learned (issue #51): temperatures, neighbour weights, selections, ablation, training.

Compares the shipped noise-level-conditional denoiser (``n3net-nlf``) with the authors' σ 25 checkpoint
(read through :func:`n3cli.weights.import_official`, never stored) on Set12 at σ 25, noise from the seed
``n3 bench`` uses (``make_noisy(clean, 25, "Set12", name)``), so full-image PSNRs match the bench tables.

1. temperatures t = exp(log_t + log 0.1) per query patch and N3 block (Barbara, House), histograms;
2. the continuous k-NN weights (k = 7 vectors over the ≤ 224 window candidates), captured by wrapping
   :func:`n3cli.nn.n3.neighbour_weights`: normalised entropy, max weight, top-7 mass, spread of the 7 vectors;
3. the candidates each model's weight vectors pick on Barbara's striped trousers (160×160 crop, one tile),
   against the clean-image oracle (the query's nearest candidates in the clean crop);
4. ablation at inference: an N3 block's neighbour volumes replaced by the query (N_j - x = 0), PSNR drop;
   and the temperatures scaled by 0.5 / 2;
5. parameter and Adam-moment sizes of the training run behind ``n3net-nlf`` per parameter group.

Usage: python benchmarks/n3_diagnostics.py [--threads 1] [--official-dir DIR] [--run DIR] [--figures docs/figures]
Writes docs/figures/n3diag-*.png; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import n3cli.nn.n3 as n3mod
from n3cli import api
from n3cli.bench.run import make_noisy
from n3cli.imaging.color import to_gray
from n3cli.imaging.io import read_image
from n3cli.imaging.metrics import psnr
from n3cli.nn.nets import build

SIGMA = 25.0
STRIPES = (290, 240, 160)  # Barbara's striped trousers: top, left, side
LOG224 = math.log(224)


def load_clean(data: Path, name: str) -> np.ndarray:
    return to_gray(read_image(data / name).pixels[..., :3]).astype(np.float32)[..., 0]


def noisy_of(clean: np.ndarray, name: str) -> np.ndarray:
    return make_noisy(clean[..., None], SIGMA, "Set12", name)[..., 0]


# --- capturing the weights --------------------------------------------------------------------------

class Capture:
    """Wraps n3cli.nn.n3.neighbour_weights; per call records the block (by order), t and weight statistics."""

    def __init__(self, keep_weights: bool = False) -> None:
        self.keep = keep_weights
        self.records: list[dict[str, Tensor]] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        # Only the reference path of the aggregation computes the weight vectors through neighbour_weights (the
        # block path fuses them into its products; same values, tests/nn/test_n3_blocks.py): use it while capturing.
        orig_forward = n3mod.N3Aggregation2d.forward

        def reference_forward(agg: Any, *args: Any, **kwargs: Any) -> Tensor:
            saved, agg.reference = agg.reference, True
            try:
                return orig_forward(agg, *args, **kwargs)
            finally:
                agg.reference = saved

        n3mod.N3Aggregation2d.forward = reference_forward  # type: ignore[method-assign]
        orig = n3mod.neighbour_weights

        def wrapped(queries: Tensor, candidates: Tensor, temperature: Any, k: int, valid: Any = None,
                    norm: Any = None, method: Any = "continuous", update: Any = "alpha") -> Tensor:
            w = orig(queries, candidates, temperature, k, valid, norm, method, update)
            self.record(w, temperature, valid)
            return w

        n3mod.neighbour_weights = wrapped
        try:
            yield
        finally:
            n3mod.neighbour_weights = orig
            n3mod.N3Aggregation2d.forward = orig_forward  # type: ignore[method-assign]

    def record(self, w: Tensor, t: Tensor, valid: Tensor) -> None:
        w = w[0].float()  # (Q, k, M)
        n_valid = valid[0].sum(-1).float()  # (Q,)
        ent = -(w * w.clamp_min(1e-30).log()).sum(-1)  # (Q, k)
        mean = w.mean(1)  # (Q, M): the 7 vectors together
        ent_mean = -(mean * mean.clamp_min(1e-30).log()).sum(-1)
        top7 = w[:, 0].topk(7, dim=-1).values.sum(-1)
        # overlap of consecutive vectors: Σ min(w_j, w_j+1) (1: the same vector, 0: disjoint)
        overlap = torch.minimum(w[:, :-1], w[:, 1:]).sum(-1).mean(-1)
        rec = dict(t=t[0, :, 0].float(), hnorm=ent / n_valid.log()[:, None], maxw=w.max(-1).values,
                   eff_all=ent_mean.exp(), top7=top7, overlap=overlap, argmax=w.argmax(-1))
        if self.keep:
            rec["w"] = w.clone()
        self.records.append(rec)

    def per_block(self, calls_per_forward: int) -> list[dict[str, Tensor]]:
        """Concatenate records of block 0 / block 1 (calls alternate in blocks of ``calls_per_forward``)."""
        out = []
        for b in range(2):
            recs = [r for i, r in enumerate(self.records) if (i // calls_per_forward) % 2 == b]
            out.append({key: torch.cat([r[key] for r in recs]) for key in recs[0]})
        return out


def tiles_per_block(h: int, w: int, tile: int) -> int:
    nh, nw = (h - 10 + 4) // 5 + 1, (w - 10 + 4) // 5 + 1  # as N3Aggregation2d with ≤ 4 px padding
    return math.ceil(nh / tile) * math.ceil(nw / tile)


def forward_raw(restorer: api.Restorer, noisy: np.ndarray) -> Tensor:
    """One plain forward pass of the network on the whole image (no tiling by api.run)."""
    x = torch.from_numpy(noisy)[None, None]
    with torch.inference_mode():
        if restorer.info.conditional:
            return restorer.model(x, torch.tensor([[0.0, (SIGMA / 255) ** 2]]))
        return restorer.model(x)


def aggregations(restorer: api.Restorer) -> list[n3mod.N3Aggregation2d]:
    return [m for m in restorer.model.modules() if isinstance(m, n3mod.N3Aggregation2d)]


def capture(restorer: api.Restorer, noisy: np.ndarray, keep: bool = False, one_tile: bool = False) -> list[dict]:
    aggs = aggregations(restorer)
    h, w = noisy.shape
    old = [a.query_tile for a in aggs]
    if one_tile:
        for a in aggs:
            a.query_tile = 10_000
    cap = Capture(keep)
    with cap.active():
        forward_raw(restorer, noisy)
    for a, q in zip(aggs, old, strict=True):
        a.query_tile = q
    n_calls = 1 if one_tile else tiles_per_block(h, w, aggs[0].query_tile)
    assert len(cap.records) == 2 * n_calls, (len(cap.records), n_calls)
    return cap.per_block(n_calls)


def distance_scale(restorer: api.Restorer) -> list[float]:
    """γ/σ of each block's distance BN at inference: the logits are -d·γ/σ (+ const) before dividing by t."""
    out = []
    for a in aggregations(restorer):
        bn = a.bn
        out.append(float(bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)) if bn is not None else 1.0)
    return out


# --- 3. which candidates ---------------------------------------------------------------------------

def grid_patches(img: Tensor) -> Tensor:
    """(n, 100) 10×10 patches on the stride-5 grid, row-major (the crop side is 5m + 10: no padding)."""
    return F.unfold(img[None, None], 10, stride=5)[0].T


def oracle_ranks(clean_crop: np.ndarray, window: int = 15) -> tuple[Tensor, Tensor, int]:
    """Per query: rank (0 = nearest) of every candidate by clean-patch SSD inside its window, 10⁶ outside."""
    p = grid_patches(torch.from_numpy(clean_crop))
    n = int(math.isqrt(p.shape[0]))
    d = torch.cdist(p, p).square()
    idx = torch.arange(n)
    start = (idx - window // 2).clamp(0, n - window)
    inside = (idx[None] >= start[:, None]) & (idx[None] < start[:, None] + window)
    valid = (inside[:, None, :, None] & inside[None, :, None, :]).reshape(n * n, n * n)
    valid &= ~torch.eye(n * n, dtype=torch.bool)
    d = d.masked_fill(~valid, float("inf"))
    ranks = d.argsort(-1).argsort(-1)
    return ranks.masked_fill(~valid, 10**6), d, n


def selection_figure(path: Path, clean_crop: np.ndarray, noisy_crop: np.ndarray, picks: dict[str, dict],
                     queries: list[int], n: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(picks)
    fig, axes = plt.subplots(len(queries) * len(names), 9, figsize=(9 * 1.0, len(queries) * len(names) * 1.15))
    for qi, q in enumerate(queries):
        for mi, name in enumerate(names):
            row = axes[qi * len(names) + mi]
            r, c = divmod(q, n)
            row[0].imshow(noisy_crop[5 * r: 5 * r + 10, 5 * c: 5 * c + 10], cmap="gray", vmin=0, vmax=1)
            row[0].set_title("query, noisy", fontsize=6, pad=1)
            row[1].imshow(clean_crop[5 * r: 5 * r + 10, 5 * c: 5 * c + 10], cmap="gray", vmin=0, vmax=1)
            row[1].set_title("query, clean", fontsize=6, pad=1)
            row[0].set_ylabel(name, fontsize=6)
            w = picks[name]["w"][q]  # (k, M)
            for j in range(7):
                m = int(w[j].argmax())
                rr, cc = divmod(m, n)
                ax = row[2 + j]
                ax.imshow(clean_crop[5 * rr: 5 * rr + 10, 5 * cc: 5 * cc + 10], cmap="gray", vmin=0, vmax=1)
                rank = int(picks[name]["ranks"][q, m])
                ax.set_title(f"w{j + 1}={float(w[j, m]):.2f} r{rank}", fontsize=6, pad=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Barbara trousers, N3 block 1: the argmax candidate of each weight vector w1..w7 (clean pixels "
                 "shown); title: its weight and its rank among the 224 candidates by clean-patch distance (r0 = best)",
                 fontsize=6)
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.1, rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- 4. ablation -----------------------------------------------------------------------------------

@contextlib.contextmanager
def ablated(restorer: api.Restorer, blocks: tuple[int, ...]) -> Iterator[None]:
    """The given N3 blocks output concat(x, 0, ..., 0): every neighbour volume is the query itself."""
    aggs = aggregations(restorer)
    for b in blocks:
        k = aggs[b].k

        def local_only(x: Tensor, e: Tensor, log_t: Tensor, progress: Any = None, k: int = k) -> Tensor:
            return torch.cat([x, x.new_zeros(x.shape[0], k * x.shape[1], *x.shape[2:])], dim=1)

        aggs[b].forward = local_only  # type: ignore[method-assign]
    try:
        yield
    finally:
        for b in blocks:
            del aggs[b].forward


@contextlib.contextmanager
def temperature_scaled(restorer: api.Restorer, factor: float) -> Iterator[None]:
    aggs = aggregations(restorer)
    old = [a.log_temperature_offset for a in aggs]
    for a in aggs:
        a.log_temperature_offset += math.log(factor)
    try:
        yield
    finally:
        for a, o in zip(aggs, old, strict=True):
            a.log_temperature_offset = o


# --- 5. training run ---------------------------------------------------------------------------------

def group_of(name: str) -> str:
    if name.startswith("blocks."):
        return "local " + name.split(".")[1]
    part = name.split(".")[2]
    return f"N3 {name.split('.')[1]} " + {"embedcnn": "embed", "tempcnn": "temp", "n3aggregation": "dist-BN"}[part]


def training_table(run: Path, official: dict[str, Tensor] | None) -> list[str]:
    from n3cli.safeload import load_tensors
    blob = load_tensors(run / "last.pt")
    from n3cli.train.optim import param_groups
    model = build(blob["net_config"])
    name_of = {id(p): n for n, p in model.named_parameters()}
    # the optimizer's parameter order: the trainer's groups (decayed, then not decayed)
    names = [name_of[id(p)] for g in param_groups(model, 0.0) for p in g["params"]]
    state = blob["optimizer"]["state"]
    assert all(tuple(state[i]["exp_avg"].shape) == tuple(blob["model"][n].shape) for i, n in enumerate(names))
    assert len(state) == len(names), (len(state), len(names))
    lr_peak = float(blob["train_config"]["lr"])
    beta1, beta2 = blob["optimizer"]["param_groups"][0]["betas"]
    groups: dict[str, dict[str, list[float]]] = {}
    for i, n in enumerate(names):
        w = blob["model"][n].float()
        s = state[i]
        step = float(s["step"])
        m_hat = s["exp_avg"] / (1 - beta1 ** step)
        v_hat = s["exp_avg_sq"] / (1 - beta2 ** step)
        upd = m_hat / (v_hat.sqrt() + 1e-8)
        g = groups.setdefault(group_of(n), dict(w2=[], u2=[], g2=[], snr=[], ow2=[], cnt=[]))
        g["w2"].append(float(w.square().sum()))
        g["u2"].append(float(upd.square().sum()))
        g["g2"].append(float(v_hat.sum()))
        g["snr"].append(float((m_hat.abs() / (v_hat.sqrt() + 1e-12)).sum()))
        g["cnt"].append(w.numel())
        if official is not None and n in official:
            g["ow2"].append(float(official[n].float().square().sum()))
    lines = ["| group | params | RMS w (ours) | RMS w (authors') | RMS grad √v̂ | √v̂ / RMS w | mean |m̂|/√v̂ "
             "| Adam step at peak lr / RMS w |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(groups, key=lambda s: (s.startswith("N3"), s)):
        g = groups[key]
        cnt = sum(g["cnt"])
        rms_w = math.sqrt(sum(g["w2"]) / cnt)
        rms_ow = math.sqrt(sum(g["ow2"]) / cnt) if g["ow2"] else float("nan")
        rms_g = math.sqrt(sum(g["g2"]) / cnt)
        rms_u = math.sqrt(sum(g["u2"]) / cnt)
        lines.append(f"| {key} | {cnt} | {rms_w:.4f} | {rms_ow:.4f} | {rms_g:.2e} | {rms_g / rms_w:.2e} "
                     f"| {sum(g['snr']) / cnt:.3f} | {lr_peak * rms_u / rms_w:.2e} |")
    extra = []
    for b in range(2):
        bias = float(blob["model"][f"nls.{b}.tempcnn.6.bias"])
        gam = float(blob["model"][f"nls.{b}.n3aggregation.bn.weight"])
        extra.append(f"block {b + 1}: tempcnn output bias {bias:+.3f}, distance-BN γ {gam:.4f}")
    if official is not None:
        for b in range(2):
            bias = float(official[f"nls.{b}.tempcnn.6.bias"])
            extra.append(f"authors' block {b + 1}: tempcnn output bias {bias:+.3f}"
                         f", distance-BN γ {float(official[f'nls.{b}.n3aggregation.bn.weight']):.4f}")
    lines += ["", f"(step {blob['step']}, lr at the end {blob['optimizer']['param_groups'][0]['lr']:.2e}, "
              f"peak lr {lr_peak:g}; moments are those of the last ~1000 steps)", ""] + [f"- {e}" for e in extra]
    return lines


# --- figures -------------------------------------------------------------------------------------------

def hist_figure(path: Path, data: dict[tuple[str, str], list[dict]], key: str, xlabel: str, log: bool,
                title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = sorted({img for _, img in data})
    fig, axes = plt.subplots(len(images), 2, figsize=(8, 2.4 * len(images)), squeeze=False)
    for ii, img in enumerate(images):
        for b in range(2):
            ax = axes[ii, b]
            vals = {m: data[(m, i)][b][key].flatten().numpy() for m, i in data if i == img}
            allv = np.concatenate(list(vals.values()))
            lo, hi = (np.log10(max(allv.min(), 1e-6)), np.log10(allv.max())) if log else (allv.min(), allv.max())
            bins = np.logspace(lo, hi, 60) if log else np.linspace(lo, hi, 60)
            for m, v in vals.items():
                ax.hist(v, bins=bins, alpha=0.55, label=m, density=False)
            if log:
                ax.set_xscale("log")
            ax.set_title(f"{img}, N3 block {b + 1}", fontsize=8)
            ax.set_xlabel(xlabel, fontsize=7)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def pct(x: Tensor, q: float) -> float:
    return float(torch.quantile(x.flatten().double(), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--official-dir", type=Path, default=Path("../shared/reference/n3net-official"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data/Set12"))
    ap.add_argument("--run", type=Path, default=Path("../main/runs/denoise-nlf-adamw-ext5"))
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    ap.add_argument("--ablation-images", nargs="+", default=["09.png", "02.png", "10.png"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    args.figures.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    official_path = args.official_dir / "n3net_sigma25.t7"
    models = {"ours": api.load_model(None, "denoise", "cpu"),
              "authors": api.load_model(official_path, "denoise", "cpu")}
    from n3cli.weights import import_official
    official_state = {k: v for k, v in import_official(official_path)[0].state_dict().items()}

    clean = {n: load_clean(args.data, n) for n in sorted({"09.png", "02.png", *args.ablation_images})}
    noisy = {n: noisy_of(c, n) for n, c in clean.items()}

    # 1 + 2: temperatures and weight statistics, whole images
    stats: dict[tuple[str, str], list[dict]] = {}
    for mname, r in models.items():
        for img in ("09.png", "02.png"):
            stats[(mname, img)] = capture(r, noisy[img])
    print(f"\n## 1-2. Temperatures and weights (σ 25, whole images)   [{time.perf_counter() - t_start:.0f} s]\n")
    print("distance-BN scale γ/σ (logit = -d·γ/σ / t): " + ", ".join(
        f"{m}: " + "/".join(f"{s:.3g}" for s in distance_scale(r)) for m, r in models.items()))
    print()
    print("| model | image | block | t median [p5, p95] | t·σ/γ median | H/log M, vector 1 (median) "
          "| H/log M, vector 7 | max w₁ median | top-7 mass of w₁ | exp H(mean of 7) | overlap w_j, w_j+1 |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for (mname, img), blocks in stats.items():
        scale = distance_scale(models[mname])
        for b, s in enumerate(blocks):
            t = s["t"]
            print(f"| {mname} | {img} | {b + 1} | {pct(t, .5):.3g} [{pct(t, .05):.3g}, {pct(t, .95):.3g}] "
                  f"| {pct(t, .5) / scale[b]:.3g} | {pct(s['hnorm'][:, 0], .5):.3f} | {pct(s['hnorm'][:, 6], .5):.3f} "
                  f"| {pct(s['maxw'][:, 0], .5):.3f} | {pct(s['top7'], .5):.3f} | {pct(s['eff_all'], .5):.1f} "
                  f"| {pct(s['overlap'], .5):.3f} |")
    hist_figure(args.figures / "n3diag-temperature.png", stats, "t", "temperature t (per query patch)", True,
                "N3 temperatures at σ 25: ours (n3net-nlf) vs authors' σ 25 checkpoint")
    ent = {k: [dict(h=b["hnorm"][:, 0]) for b in v] for k, v in stats.items()}
    hist_figure(args.figures / "n3diag-entropy.png", ent, "h", "entropy of weight vector 1 / log(#candidates)",
                False, "Continuous k-NN weight vector 1: 0 = one-hot (hard 1-NN), 1 = uniform over the window")

    # 3: selections on the trousers crop, one tile (candidate index = grid position)
    top, left, side = STRIPES
    cc = clean["09.png"][top: top + side, left: left + side]
    nc = noisy["09.png"][top: top + side, left: left + side]
    ranks, _, n = oracle_ranks(cc)
    picks = {}
    for mname, r in models.items():
        blocks = capture(r, nc, keep=True, one_tile=True)
        picks[mname] = dict(w=blocks[0]["w"], ranks=ranks, am=blocks[0]["argmax"], am2=blocks[1]["argmax"])
    a, b = picks["ours"]["am"], picks["authors"]["am"]
    inner = torch.tensor([7 <= q // n < n - 7 and 7 <= q % n < n - 7 for q in range(n * n)])
    print(f"\n## 3. Selections, Barbara trousers crop {side}×{side} at (y {top}, x {left}), "
          f"{n * n} query patches   [{time.perf_counter() - t_start:.0f} s]\n")
    print("| | vector 1 | all 7 vectors (per vector, mean) |\n|---|---:|---:|")
    print(f"| same argmax candidate, block 1 | {float((a[:, 0] == b[:, 0]).float().mean()):.3f} "
          f"| {float((a == b).float().mean()):.3f} |")
    a2, b2 = picks["ours"]["am2"], picks["authors"]["am2"]
    print(f"| same argmax candidate, block 2 | {float((a2[:, 0] == b2[:, 0]).float().mean()):.3f} "
          f"| {float((a2 == b2).float().mean()):.3f} |")
    for kk in (1, 7, 14):
        both = (ranks.gather(1, a) < kk) & (ranks.gather(1, b) < kk)
        print(f"| both argmaxes among the clean oracle's {kk} nearest (block 1) "
              f"| {float(both[:, 0].float().mean()):.3f} "
              f"| {float(both.float().mean()):.3f} |")
    for mname, p in picks.items():
        rk = ranks.gather(1, p["am"])
        print(f"| {mname}: argmax in oracle top-7, block 1 | {float((rk[:, 0] < 7).float().mean()):.3f} "
              f"| {float((rk < 7).float().mean()):.3f} |")
        rk2 = ranks.gather(1, p["am2"])
        print(f"| {mname}: argmax in oracle top-7, block 2 | {float((rk2[:, 0] < 7).float().mean()):.3f} "
              f"| {float((rk2 < 7).float().mean()):.3f} |")
        print(f"| {mname}: median oracle rank of argmax, block 1 | {pct(rk[:, 0].float(), .5):.0f} "
              f"| {pct(rk.float(), .5):.0f} |")
        w1 = p["w"][:, 0]
        mass = (w1 * (ranks < 7).float()).sum(-1)
        print(f"| {mname}: weight mass of w₁ on oracle top-7, block 1 | {pct(mass, .5):.3f} (median) | |")
    _, d_noisy, _ = oracle_ranks(nc)  # the paper's KNN baseline: matching the noisy pixels themselves
    nn7 = ranks.gather(1, d_noisy.topk(7, dim=-1, largest=False).indices)
    print(f"| noisy-pixel KNN (no embedding): j-th nearest in oracle top-7 "
          f"| {float((nn7[:, 0] < 7).float().mean()):.3f} "
          f"| {float((nn7 < 7).float().mean()):.3f} |")
    print(f"| noisy-pixel KNN: median oracle rank | {pct(nn7[:, 0].float(), .5):.0f} | {pct(nn7.float(), .5):.0f} |")
    print(f"| chance: one of 7 out of 224 | {7 / 224:.3f} | |")
    print("\nmedian over queries of each weight vector's mass on the clean oracle's 7 nearest / its max weight "
          "(block 1):\n\n| model | " + " | ".join(f"w{j + 1}" for j in range(7)) + " |\n|---|" + "---:|" * 7)
    for mname, p in picks.items():
        mass_j = (p["w"] * (ranks < 7).float()[:, None]).sum(-1)  # (Q, k)
        max_j = p["w"].max(-1).values
        print(f"| {mname} | " + " | ".join(f"{pct(mass_j[:, j], .5):.2f} / {pct(max_j[:, j], .5):.2f}"
                                         for j in range(7)) + " |")
    print(f"\n(inner queries only, full windows: same argmax block 1 vector 1 = "
          f"{float((a[inner, 0] == b[inner, 0]).float().mean()):.3f})")
    rng = np.random.default_rng(0)
    queries = [int(q) for q in rng.choice(np.flatnonzero(inner.numpy()), 4, replace=False)]
    selection_figure(args.figures / "n3diag-selection.png", cc, nc, picks, queries, n)

    # 4: ablation
    print(f"\n## 4. Ablation (PSNR dB at σ 25, whole images via api.denoise)   "
          f"[{time.perf_counter() - t_start:.0f} s]\n")
    settings: list[tuple[str, Any]] = [("full", contextlib.nullcontext), ("no N3 block 1", (0,)),
                                       ("no N3 block 2", (1,)), ("no N3 blocks", (0, 1)),
                                       ("t × 0.5", 0.5), ("t × 2", 2.0)]
    header = "| model | image | " + " | ".join(s for s, _ in settings) + " |"
    print(header + "\n|---|---|" + "---:|" * len(settings))
    for mname, r in models.items():
        for img in args.ablation_images:
            cells = []
            base = None
            for label, what in settings:
                if isinstance(what, tuple):
                    ctx = ablated(r, what)
                elif isinstance(what, float):
                    if img != "09.png":
                        cells.append("")
                        continue
                    ctx = temperature_scaled(r, what)
                else:
                    ctx = what()
                with ctx:
                    value = psnr(api.denoise(noisy[img], SIGMA, model=r), clean[img])
                base = value if base is None else base
                cells.append(f"{value:.2f}" if label == "full" else f"{value - base:+.2f}")
            print(f"| {mname} | {img} | " + " | ".join(cells) + " |", flush=True)

    # 5: training
    print(f"\n## 5. Parameters of the training run {args.run}   [{time.perf_counter() - t_start:.0f} s]\n")
    if (args.run / "last.pt").is_file():
        print("\n".join(training_table(args.run, official_state)))
    else:
        print(f"(no {args.run / 'last.pt'})")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
