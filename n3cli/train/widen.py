"""A colour model started from a trained gray one: the gray weights mapped so that the colour network computes
exactly the gray network's output on every channel of a gray image (R = G = B), with its level given.

Gray conditional N3Net: input planes (image, √a, √b), a stream of ``C`` channels between the blocks whose channel 0
carries the image (the blocks' residuals). Colour, blind-capable: input (R, G, B, √a, √b, known) and a stream of
``C + 3`` channels: R, G, B (each the gray image channel), √a, √b, the "known" flag, then the gray free channels.
Layers that read the stream take the mean of R, G and B where the gray layer read the image channel; layers that
write it write the gray image row to each of R, G and B. Training then teaches colour (chroma) and blind use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..nn.nets import BLIND_CAPABLE, N3Net


def stream_map(gray_channels: int, image_planes: int) -> list[tuple[int | None, float]]:
    """For each colour stream channel: (gray channel it copies or None, weight of a reading layer)."""
    rgb: list[tuple[int | None, float]] = [(0, 1.0 / 3.0)] * 3
    planes: list[tuple[int | None, float]] = [(1, 1.0), (2, 1.0), (None, 0.0)]
    rest: list[tuple[int | None, float]] = [(c, 1.0) for c in range(image_planes, gray_channels)]
    return rgb + planes + rest


def _read(w: Tensor, cmap: list[tuple[int | None, float]], groups: int = 1) -> Tensor:
    """A reading layer's weight (out, in, kh, kw): input columns mapped, group by group (the N3 output holds
    (k + 1) groups of stream channels)."""
    gin = w.shape[1] // groups
    cols = []
    for g in range(groups):
        for src, scale in cmap:
            cols.append(torch.zeros_like(w[:, :1]) if src is None else w[:, g * gin + src: g * gin + src + 1] * scale)
    return torch.cat(cols, dim=1)


def _write(t: Tensor, cmap: list[tuple[int | None, float]]) -> Tensor:
    """A writing layer's weight or bias: output rows mapped (rows without a source are zero)."""
    rows = [torch.zeros_like(t[:1]) if src is None else t[src: src + 1] for src, _ in cmap]
    return torch.cat(rows, dim=0)


def color_from_gray(gray: dict[str, Tensor], model: N3Net) -> dict[str, Tensor]:
    """The state dict for colour ``model`` (3 image planes in and out, blind-capable) from a gray conditional
    N3Net's state dict ``gray``. Raises ValueError when the two do not correspond."""
    cfg = model.config
    if cfg.out_channels != 3 or cfg.noise_inputs != BLIND_CAPABLE or cfg.in_channels != 6:
        raise ValueError("the target must be a colour (3 planes), blind-capable model")
    w0 = gray.get("blocks.0.conv1.weight")
    if w0 is None or w0.shape[1] != 3:
        raise ValueError("the source must be a gray noise-level-conditional N3Net (image, √a, √b)")
    gray_c = gray["blocks.0.conv2.weight"].shape[0] if len(model.blocks) > 1 else None
    if gray_c is not None and cfg.inter_channels != gray_c + 3:
        raise ValueError(f"a gray stream of {gray_c} channels needs inter_channels = {gray_c + 3}, "
                         f"not {cfg.inter_channels}")
    inputs = stream_map(3, 3)[:6]  # (R, G, B, √a, √b, known) from (image, √a, √b)
    stream = stream_map(gray_c, 3) if gray_c is not None else []
    out: dict[str, Tensor] = {}
    last = len(model.blocks) - 1
    for key, value in gray.items():
        if key == "blocks.0.conv1.weight":
            value = _read(value, inputs)
        elif key.startswith("blocks.") and ".conv1.weight" in key:
            value = _read(value, stream, groups=value.shape[1] // gray_c)  # the N3 output: (k + 1) groups
        elif key.startswith(f"blocks.{last}.conv2."):
            value = torch.cat([value] * 3, dim=0)  # the output image: each of R, G, B
        elif key.startswith("blocks.") and ".conv2." in key:
            value = _write(value, stream)
        elif key.startswith("nls.") and (".embedcnn.0.weight" in key or ".tempcnn.0.weight" in key):
            value = _read(value, stream)
        out[key] = value
    try:
        model.load_state_dict(out)  # every other tensor must fit as it is
    except RuntimeError as exc:
        raise ValueError(f"the gray model's layout differs from the colour model's ({str(exc).splitlines()[1]})"
                         ) from None
    return out
