"""A local block after an N3 block reads its residual from the N3 block's input (the output's leading channels):
the same function and gradients as slicing the wide output, in float64 and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from n3cli.nn.nets import N3Net, n3net


def _sliced(model: N3Net, x: torch.Tensor) -> torch.Tensor:
    """The forward pass with every residual sliced from the block's own input (before the shortcut)."""
    y = x
    for i, block in enumerate(model.blocks):
        y = block(y)
        if i < len(model.nls):
            y = model.nls[i](y)
    return y


@pytest.mark.parametrize("out_channels", [1, 3])
def test_residual_from_the_n3_input_is_the_sliced_residual(out_channels: int) -> None:
    torch.manual_seed(0)
    model = n3net(in_channels=out_channels, out_channels=out_channels, depth=3, features=8, k=2,
                  embed_features=8).double().train()
    x = torch.randn(2, out_channels, 30, 26, dtype=torch.float64)
    runs = []
    for forward in (model, lambda t: _sliced(model, t)):
        model.zero_grad(set_to_none=True)
        out = forward(x)
        out.square().sum().backward()
        runs.append((out.detach(), [q.grad.clone() for q in model.parameters()]))
    (a, ga), (b, gb) = runs
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    scale = max(g.abs().max().item() for g in gb)
    for g1, g2 in zip(ga, gb, strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-9 * scale)


def test_residual_keeps_the_output_precision_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = n3net(depth=3, features=8, k=2, embed_features=8).eval()
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = model(x), _sliced(model, x)
    assert a.dtype == b.dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)
