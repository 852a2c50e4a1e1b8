"""Optimiser, learning-rate schedule, initialisation and arithmetic of a run (the paper's protocols)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..engine import native_bf16
from .config import TrainConfig


def autocast_for(precision: str, device: torch.device) -> torch.autocast | None:
    """The autocast context of a run's precision on ``device`` (None: full float32).

    Only the local CNNs run in bfloat16: the N3 blocks stay float32 (their gradients can go astray in bf16;
    :meth:`n3cli.nn.n3.N3Block2d.forward`); ``bf16-all`` runs their embedding and temperature CNNs in bf16 too (set
    on the model by the trainer). Timings are in docs/training.md.
    """
    use = precision in ("bf16", "bf16-all") or (precision == "auto" and native_bf16(device))
    if not use or device.type not in ("cpu", "cuda"):
        return None
    return torch.autocast(device.type, dtype=torch.bfloat16)


def optimizer_name(cfg: TrainConfig) -> str:
    return cfg.optimizer or ("adam" if cfg.task == "denoise" else "sgd")


def make_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    name = optimizer_name(cfg)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate(cfg, 0), momentum=0.9)
    return torch.optim.Adam(groups, lr=learning_rate(cfg, 0), betas=(0.9, 0.999),
                            decoupled_weight_decay=name == "adamw")


def learning_rate(cfg: TrainConfig, step: int, cpu_seconds: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based) of ``cfg.steps``.

    denoise/paper: 1e-3 decayed exponentially to 1e-8 over the run (Sec. 5, training details);
    sr/paper (SGD): 0.1, divided by 10 every quarter of the run (supplement, following VDSR);
    cosine: half a cosine from the initial rate down to 1e-3 of it, for short CPU budgets.
    """
    base = cfg.lr if cfg.lr is not None else (0.1 if optimizer_name(cfg) == "sgd" else 1e-3)
    if cfg.budget_hours:  # progress through a CPU-time budget instead of a step count
        frac = min(cpu_seconds / (cfg.budget_hours * 3600.0), 1.0)
    else:
        frac = min(step / max(cfg.steps, 1), 1.0)
    if cfg.schedule == "cosine":
        return base * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * frac)))
    if optimizer_name(cfg) == "sgd":
        return base * 0.1 ** min(int(frac * 4), 3)
    return base * (1e-8 / base) ** frac


def dncnn_init(model: nn.Module, gen: torch.Generator) -> None:
    """DnCNN-style initialisation: Kaiming-normal convolutions; BN scales drawn as
    sqrt(2/(9·64))·N(0, 1) with magnitude at least 0.025, BN shifts zero."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                w = torch.randn(m.num_features, generator=gen) * math.sqrt(2.0 / (9 * 64))
                w = torch.where(w.abs() < 0.025, torch.copysign(torch.full_like(w, 0.025), w), w)
                m.weight.copy_(w)
                m.bias.zero_()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution weights and BN scales only (as in the DnCNN code)."""
    decay, no_decay = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            is_conv_w = isinstance(m, nn.Conv2d) and name == "weight"
            is_bn_scale = isinstance(m, nn.modules.batchnorm._BatchNorm) and name == "weight"
            (decay if is_conv_w or is_bn_scale else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
