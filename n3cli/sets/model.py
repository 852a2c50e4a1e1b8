"""CNNNet (Yi et al. 2018, "Learning to find good correspondences") and CNNNet+N3 (paper Sec. 5.5).

Items are correspondences, tensors are (B, N, C): per-point ("1×1 convolution") layers are
:class:`torch.nn.Linear` on the last dimension, so the network is permutation-equivariant in N.

* Input: per-point linear 4 -> 128.
* 12 residual blocks as in Yi et al.'s network: two of [per-point linear 128 -> 128, context
  normalisation, batch normalisation, ReLU], and a skip connection around both (the paper's text
  describes a block as one such layer; we use the two-layer ResNet block of the code it trained
  with).
* With ``n3=True``: after block 6, an :class:`~n3cli.nn.n3.N3Set` block searching all other
  correspondences of the set, then a per-point linear (k + 1)·128 -> 128. Its embedding and
  temperature networks are per-point versions of the paper's Tables 7 and 8: two hidden layers
  [linear 64, BN, ReLU] and a linear output of ``embed_dim`` (32) channels, resp. 1 channel read as
  log t. k = 4 by default: the paper gives no k for Sec. 5.5 (its image blocks use k = 7); on
  CPU at N = 1000 a step with k = 7 costs about twice one with k = 4 (the N3 block dominates).
* Output: per-point linear 128 -> 1, a logit per correspondence. Weights for the eight-point
  algorithm are relu(tanh(logit)) (Yi et al.).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..nn.knn import Selection
from ..nn.n3 import N3Set


class ContextNorm(nn.Module):
    """Normalise every channel over the set: (x - mean_N) / sqrt(var_N + eps), x (B, N, C).

    Biased (population) variance; no learned parameters (the following batch norm has them).
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=-2, keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + self.eps)


class PointBatchNorm(nn.BatchNorm1d):
    """Batch norm of (B, N, C) features over all B·N points, per channel."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)


def cn_layer(channels: int) -> nn.Sequential:
    """Per-point linear (no bias: context norm removes it), context norm, batch norm, ReLU."""
    return nn.Sequential(nn.Linear(channels, channels, bias=False), ContextNorm(), PointBatchNorm(channels),
                         nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """x + [linear, CN, BN, ReLU] × 2 (x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(cn_layer(channels), cn_layer(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def point_mlp(in_features: int, hidden: int, out_features: int, depth: int = 3) -> nn.Sequential:
    """(depth - 1) × [linear, BN, ReLU] then a linear layer; per point (Tables 7/8 with 1×1 kernels)."""
    layers: list[nn.Module] = []
    ch = in_features
    for _ in range(depth - 1):
        layers += [nn.Linear(ch, hidden, bias=False), PointBatchNorm(hidden), nn.ReLU(inplace=True)]
        ch = hidden
    layers.append(nn.Linear(ch, out_features))
    return nn.Sequential(*layers)


@dataclass
class CNNNetConfig:
    """Architecture of :class:`CNNNet` (stored with saved weights)."""

    channels: int = 128
    blocks: int = 12
    n3: bool = False
    n3_after: int = 6
    k: int = 4
    embed_dim: int = 32
    embed_hidden: int = 64
    method: Selection = "continuous"

    def to_dict(self) -> dict:
        return asdict(self)


class CNNNet(nn.Module):
    """Context-normalisation network, optionally with an N3 block: (B, N, 4) -> logits (B, N)."""

    def __init__(self, config: CNNNetConfig | None = None, **overrides: object) -> None:
        super().__init__()
        cfg = CNNNetConfig(**{**asdict(config or CNNNetConfig()), **overrides})  # type: ignore[arg-type]
        if not 0 < cfg.n3_after <= cfg.blocks:
            raise ValueError(f"n3_after must be in 1..{cfg.blocks}, got {cfg.n3_after}")
        self.config = cfg
        c = cfg.channels
        self.input = nn.Linear(4, c)
        self.blocks = nn.ModuleList(ResidualBlock(c) for _ in range(cfg.blocks))
        if cfg.n3:
            self.n3 = N3Set(cfg.k, point_mlp(c, cfg.embed_hidden, cfg.embed_dim),
                            point_mlp(c, cfg.embed_hidden, 1), method=cfg.method)
            self.n3_fuse = nn.Linear((cfg.k + 1) * c, c)
        self.output = nn.Linear(c, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.input(x)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.config.n3 and i + 1 == self.config.n3_after:
                h = self.n3_fuse(self.n3(h))
        return self.output(h).squeeze(-1)


def correspondence_weights(logits: Tensor) -> Tensor:
    """Weights for the eight-point algorithm: relu(tanh(logit)) (Yi et al.)."""
    return torch.relu(torch.tanh(logits))
