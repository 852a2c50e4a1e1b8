"""Context normalisation and permutation equivariance of CNNNet with and without the N3 block."""

from __future__ import annotations

import pytest
import torch

from n3cli.sets.model import CNNNet, ContextNorm


def test_context_norm_standardises_each_channel_over_the_set() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 50, 8) * torch.rand(1, 1, 8) * 5 + torch.randn(3, 1, 8) * 3
    y = ContextNorm()(x)
    assert torch.allclose(y.mean(1), torch.zeros(3, 8), atol=1e-5)
    assert torch.allclose(y.var(1, correction=0), torch.ones(3, 8), atol=1e-3)
    perm = torch.randperm(50)
    assert torch.allclose(ContextNorm()(x[:, perm]), y[:, perm], atol=1e-6)


@pytest.mark.parametrize("n3", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_net_is_permutation_equivariant(n3: bool, train: bool) -> None:
    torch.manual_seed(1)
    net = CNNNet(channels=16, blocks=4, n3=n3, n3_after=2, k=3, embed_dim=8, embed_hidden=16).double()
    net.train(train)
    x = torch.randn(2, 40, 4, dtype=torch.float64) * 0.3
    perm = torch.randperm(40)
    with torch.no_grad():
        y = net(x)
        y_perm = net(x[:, perm])
    assert y.shape == (2, 40)
    assert torch.allclose(y_perm, y[:, perm], atol=1e-9)


def test_n3_block_is_after_the_requested_block() -> None:
    net = CNNNet(channels=16, blocks=4, n3=True, n3_after=2, k=3, embed_dim=8, embed_hidden=16)
    assert net.n3_fuse.in_features == 4 * 16 and net.n3.k == 3
    with pytest.raises(ValueError):
        CNNNet(blocks=4, n3_after=5)
