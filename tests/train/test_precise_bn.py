"""Precise BN: running statistics recomputed as the plain average over calibration batches."""

from __future__ import annotations

import torch
from torch import nn

from n3cli.train.precise_bn import recalibrate_bn


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())


def test_statistics_are_the_average_over_batches() -> None:
    net = _net().eval()
    batches = [torch.randn(3, 1, 8, 8) * (i + 1) + i for i in range(4)]
    params = {k: v.clone() for k, v in net.named_parameters()}
    assert recalibrate_bn(net, batches) == 4
    with torch.no_grad():
        feats = [net[0](x) for x in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    variances = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(net[1].running_mean, means)
    torch.testing.assert_close(net[1].running_var, variances)
    assert not net.training and net[1].momentum == 0.1
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k])


def test_no_batches_keeps_the_statistics() -> None:
    net = _net()
    net[1].running_mean.fill_(3.0)
    assert recalibrate_bn(net, iter([])) == 0
    assert torch.all(net[1].running_mean == 3.0)
