"""Channel health of training checkpoints: silent channels and the scale of the convolution weights.

For each checkpoint: its step, optimiser, the share of BN + ReLU channels that are constant over a
batch of 16 training inputs drawn as the run draws them (silent, see ``n3cli.train.health``), the same
per part of the network, and the median RMS of the BN-normalised convolution weights relative to their
He initialisation.

    python benchmarks/channel_health.py runs/*/last.pt ../shared/reference/n3net-official/n3net_sigma25.t7

The authors' checkpoints are probed with 16 Train400 crops under their own Gaussian σ.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from n3cli.nn.nets import build  # noqa: E402
from n3cli.train import checkpoint  # noqa: E402
from n3cli.train.config import TrainConfig  # noqa: E402
from n3cli.train.data import ImageBank  # noqa: E402
from n3cli.train.health import sequential_pairs, silent_by_layer  # noqa: E402
from n3cli.train.trainer import calibration_inputs, run_task, training_bank  # noqa: E402
from n3cli.weights import import_official  # noqa: E402


def silent_by_part(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """(silent, total) BN + ReLU channels per part: local blocks and the N3 blocks' CNNs."""
    parts: dict[str, tuple[int, int]] = {}
    for name, (silent, total) in silent_by_layer(model, x).items():
        key = name.split(".")
        part = ".".join(key[:3] if key[0] == "nls" else key[:2])
        s0, t0 = parts.get(part, (0, 0))
        parts[part] = (s0 + silent, t0 + total)
    return parts


def weight_scale(model: nn.Module) -> float:
    """Median over conv→BN layers of RMS(weight) / sqrt(2 / fan_in)."""
    ratios = [a.weight.float().square().mean().sqrt().item() / math.sqrt(2.0 / a.weight[0].numel())
              for a, b in sequential_pairs(model) if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)]
    return statistics.median(ratios) if ratios else float("nan")


def official_model_and_batch(path: Path, data: Path) -> tuple[nn.Module, torch.Tensor, str]:
    """An authors' checkpoint with 16 Train400 crops (80²) under its own Gaussian σ."""
    model, info = import_official(path)
    sigma = float(info.sigma or 25.0)
    gen = torch.Generator().manual_seed(20181203)
    clean = ImageBank([str(data)], min_size=1, luma="L").crops(16, 80, gen)
    return model, clean + torch.randn(clean.shape, generator=gen) * sigma / 255.0, f"σ {sigma:g} (authors')"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", type=Path, nargs="+", help="training checkpoints (.pt) or the authors' .t7 files")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "Train400",
                    help="training images for the authors' checkpoints")
    args = ap.parse_args()
    print("| checkpoint | step | optimizer | silent channels | per local block | N3 blocks' CNNs (embedding, "
          "temperature; per block) | weight RMS / init |")
    print("| --- | ---: | --- | ---: | --- | --- | ---: |")
    for p in args.checkpoints:
        if p.suffix == ".t7":
            model, x, opt = official_model_and_batch(p, args.data)
            step = "–"
        else:
            st = checkpoint.load(p)
            cfg = st["train_config"]
            tc = TrainConfig(**{**cfg, "out": str(p.parent)})
            model = build({**st["net_config"], "noise_inputs": run_task(tc).noise_inputs})
            model.load_state_dict(st["model"])
            opt = cfg.get("optimizer") or ("adam" if cfg.get("task", "denoise") == "denoise" else "sgd")
            x = next(calibration_inputs(tc, training_bank(tc), 1))
            step = str(st["step"])
        parts = silent_by_part(model, x)
        s, t = sum(v[0] for v in parts.values()), sum(v[1] for v in parts.values())
        blocks = " / ".join(f"{v[0]}/{v[1]}" for k, v in parts.items() if k.startswith("blocks"))
        nls = " / ".join(f"{v[0]}/{v[1]}" for k, v in parts.items() if k.startswith("nls")) or "–"
        print(f"| {p.name if p.suffix == '.t7' else p} | {step} | {opt} | {s / t:.1%} | {blocks} | {nls} "
              f"| {weight_scale(model):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
