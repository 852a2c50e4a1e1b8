"""The synthetic two-view generator: labels agree with the geometry, determinism, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n3cli.sets.data import SPLITS, TwoViewConfig, make_batch, make_sample, split_seed
from n3cli.sets.geometry import skew, symmetric_epipolar_distance

CFG = TwoViewConfig(n=300)


def test_labels_follow_the_true_essential_matrix() -> None:
    b = make_batch("train", range(6), CFG)
    assert b.x.shape == (6, 300, 4) and b.labels.shape == (6, 300)
    assert torch.allclose(b.E * 2 ** 0.5, skew(b.t) @ b.R)  # E = [t]x R / sqrt(2): t and E have unit norm
    d = symmetric_epipolar_distance(b.x.double(), b.E)
    assert torch.equal(b.labels.bool(), d < CFG.threshold)
    gen = b.generated
    assert (d[gen] < CFG.threshold).double().mean() > 0.95  # noisy inliers: within ~2.5 sigma
    assert (d[gen].median() < 1e-5)  # ~ (1.4 px / 500 px)^2 * 2
    assert (d[~gen] >= CFG.threshold).double().mean() > 0.95  # random pairs: mostly far from their lines
    ratio = 1 - gen.double().mean(1)
    assert torch.allclose(ratio, b.outlier_ratio, atol=1 / 300)
    assert ((b.outlier_ratio >= 0.5) & (b.outlier_ratio <= 0.9)).all()
    rot = torch.linalg.det(b.R)
    assert torch.allclose(rot, torch.ones_like(rot))


def test_noise_free_inliers_lie_on_their_epipolar_lines() -> None:
    s = make_sample("test", 3, TwoViewConfig(n=200, noise_px=0.0))
    x, ess = torch.from_numpy(s["x"]), torch.from_numpy(s["E"])
    d = symmetric_epipolar_distance(x, ess).numpy()
    assert d[s["generated"]].max() < 1e-20
    inl = s["x"][s["generated"]]
    assert np.abs(inl[:, :2]).max() <= 0.64 + 1e-9 and np.abs(inl[:, 2:]).max() <= 0.64 + 1e-9  # in both images


def test_deterministic_given_split_and_index() -> None:
    a, b = make_sample("val", 7, CFG), make_sample("val", 7, CFG)
    for key in a:
        assert np.array_equal(a[key], b[key])
    c = make_sample("val", 8, CFG)
    assert not np.array_equal(a["x"], c["x"])


def test_splits_are_disjoint_seed_ranges() -> None:
    ranges = sorted((first, first + size) for first, size in SPLITS.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert split_seed("train", 0) != split_seed("val", 0) != split_seed("test", 0)
    assert not np.array_equal(make_sample("train", 0, CFG)["x"], make_sample("test", 0, CFG)["x"])
    with pytest.raises(ValueError):
        split_seed("val", SPLITS["val"][1])
    with pytest.raises(ValueError):
        split_seed("holdout", 0)
