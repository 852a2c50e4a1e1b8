"""NLF input planes: nlf_from_planes inverts nlf_planes, one (a, b) per batch item."""

from __future__ import annotations

import torch

from n3cli.imaging import noise


def test_nlf_planes_round_trip() -> None:
    a = torch.tensor([0.0, 1e-4, 3e-2])
    b = torch.tensor([(25 / 255) ** 2, 1e-6, 2e-4])
    image = torch.rand(3, 1, 5, 7)
    x = torch.cat([image, noise.nlf_planes(a, b, image)], dim=1)
    a2, b2 = noise.nlf_from_planes(x)
    assert torch.allclose(a2, a, rtol=1e-5, atol=0) and torch.allclose(b2, b, rtol=1e-5, atol=0)
