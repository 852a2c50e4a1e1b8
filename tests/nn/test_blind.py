"""Blind-capable models: planes √a, √b and "level known"; forward(x) without a level."""

from __future__ import annotations

import pytest
import torch

from n3cli.nn.nets import BLIND_CAPABLE, n3net_light, noise_planes


def test_planes_hold_the_level_and_whether_it_is_known() -> None:
    like = torch.zeros(3, 1, 4, 5)
    rows = torch.tensor([[0.0, 0.01, 1.0], [1e-3, 1e-5, 0.0], [4e-3, 4e-5, 1.0]])
    p = noise_planes(rows, like, BLIND_CAPABLE)
    assert p.shape == (3, 3, 4, 5)
    assert torch.allclose(p[0, :, 0, 0], torch.tensor([0.0, 0.1, 1.0]))
    assert torch.equal(p[1, :, 0, 0], torch.zeros(3))  # blind: the level is withheld, not passed on
    assert torch.allclose(p[2, :, 0, 0], torch.tensor([4e-3 ** 0.5, 4e-5 ** 0.5, 1.0]))
    assert torch.equal(noise_planes(None, like, BLIND_CAPABLE), torch.zeros(3, 3, 4, 5))
    two = noise_planes((0.0, 0.01), like, BLIND_CAPABLE)  # (a, b): known
    assert torch.allclose(two[:, :, 0, 0], torch.tensor([0.0, 0.1, 1.0]).expand(3, 3))


def test_a_two_plane_model_refuses_what_it_cannot_take() -> None:
    like = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="needs a noise level"):
        noise_planes(None, like)
    with pytest.raises(ValueError, match=r"\(a, b\)"):
        noise_planes(torch.tensor([[0.0, 0.1, 1.0]]), like)


def test_blind_forward_is_the_forward_with_the_level_withheld() -> None:
    torch.manual_seed(0)
    model = n3net_light(in_channels=6, out_channels=3, noise_inputs=3, depth=3, features=8, embed_features=8,
                        inter_channels=11).eval()
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        blind = model(x)
        withheld = model(x, torch.tensor([[0.3, 0.2, 0.0]] * 2))
        known = model(x, (0.0, (25 / 255) ** 2))
    assert blind.shape == x.shape
    assert torch.equal(blind, withheld)
    assert not torch.allclose(blind, known)
    gray = n3net_light(in_channels=3, noise_inputs=2, depth=3, features=8, embed_features=8).eval()
    with pytest.raises(ValueError, match="conditional"):
        gray(torch.rand(1, 1, 16, 16))
