"""Local CNN blocks (DnCNN, VDSR), N3Net, and builder functions with the paper's defaults.

Builders return models that know nothing of files: :mod:`n3cli.weights` loads weights into them.
Module names follow the paper's structure (``blocks`` of local CNNs, ``nls`` of N3 blocks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .knn import Selection, Update
from .n3 import N3Block2d


class LocalBlock(nn.Module):
    """A DnCNN (Table 9) or VDSR (Table 11) block with a residual connection.

    conv1 (3×3, bias) → ReLU → (depth - 2) × [conv (no bias), BN, ReLU] → conv2 (3×3, bias). The
    block input is added to the first min(C_in, C_out) output channels (the residual / skip).
    ``bn=False`` gives the original VDSR layers (conv + ReLU only).
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, features: int = 64,
                 bn: bool = True, residual: bool = True) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"a local block needs depth >= 2, got {depth}")
        self.conv1 = nn.Conv2d(in_channels, features, 3, padding=1)
        layers: list[nn.Module] = []
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(features, out_channels, 3, padding=1)
        self.residual = residual
        self.skip = min(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.layer1(torch.relu_(self.conv1(x))))  # in place: conv1's output is not kept
        if not self.residual:
            return y
        if self.skip == y.shape[1]:
            return y + x[:, : self.skip]
        return torch.cat([y[:, : self.skip] + x[:, : self.skip], y[:, self.skip:]], dim=1)


#: Keys of configurations stored by earlier versions that no setting reads any more (``block``: the local block's
#: structure is given by ``depth`` and ``bn``; ``extra``: never used). Dropped when such a file is loaded.
_RETIRED = frozenset({"block", "extra"})


@dataclass
class NetConfig:
    """Everything needed to rebuild a model (stored beside its weights)."""

    arch: str = "n3net"  # n3net | n3net-light | knn | dncnn | vdsr
    in_channels: int = 1  # image planes + conditioning planes
    noise_inputs: int = 0  # conditioning planes the model builds from forward's ``noise``: 0 none, 2 (√a, √b),
    # 3 (√a, √b, known): a model that also works blind (``forward(x)``, the level inferred from the image)
    out_channels: int = 1
    depth: int = 6
    n_blocks: int = 3
    features: int = 64
    inter_channels: int = 8
    k: int = 7
    patch: int = 10
    stride: int = 5
    window: int = 15
    embed_features: int = 64
    embed_channels: int = 8
    selection: str = "continuous"
    update: str = "alpha"
    embedding: str = "cnn"
    bn: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        known = {f for f in cls.__dataclass_fields__}
        d = {key: value for key, value in d.items() if key not in _RETIRED}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


NoiseLevel = Tensor | tuple[float, float]

#: ``noise_inputs`` of a model that also denoises blind: planes √a, √b and a "level known" flag (1 known, 0 blind).
BLIND_CAPABLE = 3


def noise_planes(noise: NoiseLevel | None, like: Tensor, planes: int = 2) -> Tensor:
    """Constant planes (N, planes, H, W) holding √a and √b of each item's noise level function σ²(x) = a·x + b
    (x in [0, 1]; Gaussian noise of σ on the 0-255 scale is a = 0, b = (σ/255)²), the conditioning input
    of a noise-level-conditional model (paper Sec. 5.3 feeds the NLF as extra channels; the square roots
    keep the planes in the image's range). ``noise``: (N, 2) or (2,) / (a, b) for every item of ``like``.

    ``planes`` = 3 (:data:`BLIND_CAPABLE`) adds a third plane, 1 where the level is known and 0 where it is not:
    ``noise`` None (every item blind) or (N, 3) rows (a, b, known) with known 0 or 1; a blind item's √a, √b are 0."""
    n, _, h, w = like.shape
    if noise is None:
        if planes != BLIND_CAPABLE:
            raise ValueError("this model needs a noise level")
        return like.new_zeros(n, planes, 1, 1).expand(n, planes, h, w)
    t = torch.as_tensor(noise, dtype=like.dtype, device=like.device)
    cols = t.shape[-1]
    if cols not in (2, 3) or (cols == 3 and planes != BLIND_CAPABLE):
        raise ValueError(f"noise levels must be (a, b){' or (a, b, known)' if planes == 3 else ''}, got {cols} values")
    t = t.reshape(-1, cols).expand(n, cols)
    known = t[:, 2:3] if cols == 3 else t.new_ones(n, 1)
    ab = t[:, :2].clamp_min(0).sqrt() * known
    out = ab if planes == 2 else torch.cat([ab, known], dim=1)
    return out.view(n, planes, 1, 1).expand(n, planes, h, w)


class N3Net(nn.Module):
    """Local CNN blocks interleaved with N3 blocks (Fig. 2b, Tables 10 and 12).

    With n_blocks = 1 and no N3 block this is a plain DnCNN / VDSR network. A noise-level-conditional model
    (``config.noise_inputs`` = 2) takes its noise level in :meth:`forward`, as ``forward(x, noise)``.
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        n = cfg.n_blocks
        self.blocks = nn.ModuleList()
        self.nls = nn.ModuleList()
        ch = cfg.in_channels
        for i in range(n):
            last = i == n - 1
            out = cfg.out_channels if last else cfg.inter_channels
            self.blocks.append(LocalBlock(ch, out, cfg.depth, cfg.features, bn=cfg.bn))
            if not last:
                nl = N3Block2d(out, cfg.k, cfg.embed_features, cfg.embed_channels, cfg.patch, cfg.stride,
                               cfg.window, method=_sel(cfg.selection), update=_upd(cfg.update),
                               embedding=cfg.embedding)
                self.nls.append(nl)
                ch = nl.out_channels

    @property
    def conditional(self) -> bool:
        """Whether the model takes a noise level (``forward(x, noise)``)."""
        return self.config.noise_inputs > 0

    @property
    def blind_capable(self) -> bool:
        """Whether the model also denoises without a noise level (``forward(x)``)."""
        return self.config.noise_inputs == BLIND_CAPABLE

    def forward(self, x: Tensor, noise: NoiseLevel | None = None) -> Tensor:
        """x (N, C, H, W) image planes; ``noise`` the NLF (a, b) of each item for a conditional model (a blind-capable
        one also takes None, or (a, b, known) rows, see :func:`noise_planes`)."""
        if self.conditional:
            if noise is None and not self.blind_capable:
                raise ValueError("this model is noise-level-conditional: pass noise=(a, b) (Gaussian σ: (0, σ²))")
            x = torch.cat([x, noise_planes(noise, x, self.config.noise_inputs)], dim=1)
        elif noise is not None:
            raise ValueError("this model takes no noise level")
        guide = x[:, :1] if self.config.embedding == "input" else None
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 or \
            self.blocks[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
        y = x
        for i, block in enumerate(self.blocks):
            y = block(y)
            if i < len(self.nls):
                y = self.nls[i](y, guide)
                if channels_last:  # a no-op but for the reference aggregation (the others keep channels-last)
                    y = y.contiguous(memory_format=torch.channels_last)
        return y


def _sel(name: str) -> Selection:
    if name not in ("continuous", "hard", "concrete"):
        raise ValueError(f"unknown selection {name!r}")
    return name  # type: ignore[return-value]


def _upd(name: str) -> Update:
    if name not in ("alpha", "logits"):
        raise ValueError(f"unknown update {name!r}")
    return name  # type: ignore[return-value]


# --- builders with the paper's defaults -------------------------------------------------------

def n3net(in_channels: int = 1, out_channels: int = 1, **overrides: Any) -> N3Net:
    """N3Net for denoising (Table 10): 3 DnCNN blocks of depth 6, two N3 blocks with k = 7."""
    return N3Net(NetConfig(arch="n3net", in_channels=in_channels, out_channels=out_channels, **overrides))


def n3net_light(in_channels: int = 1, out_channels: int = 1, **overrides: Any) -> N3Net:
    """The light N3Net of Table 1: 2 DnCNN blocks of depth 6 and one N3 block."""
    cfg = dict(arch="n3net-light", n_blocks=2) | overrides
    return N3Net(NetConfig(in_channels=in_channels, out_channels=out_channels, **cfg))


def knn_net(in_channels: int = 1, out_channels: int = 1, **overrides: Any) -> N3Net:
    """The KNN-block baseline (Table 1, iii): hard 7-NN selection matching the noisy input's patches."""
    cfg = dict(arch="knn", selection="hard", embedding="input") | overrides
    return N3Net(NetConfig(in_channels=in_channels, out_channels=out_channels, **cfg))


def dncnn(in_channels: int = 1, out_channels: int = 1, depth: int = 17, **overrides: Any) -> N3Net:
    """DnCNN (Zhang et al.): depth-17 residual denoiser, the paper's baseline (Table 1, i)."""
    cfg = dict(arch="dncnn", n_blocks=1, depth=depth) | overrides
    return N3Net(NetConfig(in_channels=in_channels, out_channels=out_channels, **cfg))


def n3net_sr(in_channels: int = 1, out_channels: int = 1, **overrides: Any) -> N3Net:
    """N3Net for super-resolution (Table 12): 3 VDSR blocks of depth 7 (conv/BN/ReLU), two N3 blocks."""
    cfg = dict(arch="n3net-sr", depth=7) | overrides
    return N3Net(NetConfig(in_channels=in_channels, out_channels=out_channels, **cfg))


def vdsr(in_channels: int = 1, out_channels: int = 1, depth: int = 20, **overrides: Any) -> N3Net:
    """VDSR (Kim et al.): 20 conv + ReLU layers without BN and a global residual."""
    cfg = dict(arch="vdsr", n_blocks=1, depth=depth, bn=False) | overrides
    return N3Net(NetConfig(in_channels=in_channels, out_channels=out_channels, **cfg))


BUILDERS = {"n3net": n3net, "n3net-light": n3net_light, "knn": knn_net, "dncnn": dncnn,
            "n3net-sr": n3net_sr, "vdsr": vdsr}


def build(config: NetConfig | dict[str, Any]) -> N3Net:
    """Rebuild a model from its stored configuration."""
    cfg = config if isinstance(config, NetConfig) else NetConfig.from_dict(config)
    if cfg.arch not in BUILDERS:
        raise ValueError(f"unknown architecture {cfg.arch!r}; known: {', '.join(BUILDERS)}")
    return N3Net(cfg)
