"""Eight-point algorithm, pose decomposition and error, mAP."""

from __future__ import annotations

import math

import torch

from n3cli.sets import geometry as g
from n3cli.sets.data import TwoViewConfig, make_batch


def _clean(n: int = 200, count: int = 4, noise: float = 0.0):
    return make_batch("test", range(count), TwoViewConfig(n=n, noise_px=noise))


def test_eight_point_recovers_the_pose_from_noise_free_inliers() -> None:
    b = _clean()
    w = b.generated.double()  # inliers weight 1, outliers 0
    for normalise in (True, False):
        E = g.weighted_eight_point(b.x.double(), w, normalise)
        sv = torch.linalg.svdvals(E)
        assert torch.allclose(sv, torch.tensor([1.0, 1.0, 0.0], dtype=sv.dtype).expand_as(sv), atol=1e-9)
        R, t = g.select_pose(E, b.x.double(), w, "cheirality")
        assert (g.pose_error_deg(R, t, b.R, b.t) < 0.1).all()
        # cheirality also fixes the sign of t
        assert ((t * b.t).sum(-1) > 0).all()


def test_unweighted_eight_point_fails_under_outliers_and_weights_fix_it() -> None:
    b = _clean(n=400, noise=1.0)
    x = b.x.double()
    err_all = g.pose_error_deg(*g.estimate_pose(x, torch.ones_like(x[..., 0])), b.R, b.t)
    err_lab = g.pose_error_deg(*g.estimate_pose(x, b.labels.double()), b.R, b.t)
    assert err_lab.max() < 5.0 and err_all.median() > 10.0


def test_decomposition_candidates_are_poses_of_e() -> None:
    b = _clean(count=2)
    Rs, ts = g.decompose_essential(b.E)
    assert torch.allclose(torch.linalg.det(Rs), torch.ones(2, 4, dtype=Rs.dtype))
    for i in range(4):
        cand = g.skew(ts[:, i]) @ Rs[:, i]
        sign = torch.sign((cand * b.E).sum((-1, -2)))[:, None, None]
        assert torch.allclose(sign * cand, b.E * 2 ** 0.5, atol=1e-9)  # b.E has unit norm
    R, t = g.select_pose(b.E, b.x.double(), b.generated.double(), "oracle", b.R, b.t)
    assert (g.pose_error_deg(R, t, b.R, b.t) < 1e-6).all()


def test_errors_and_map() -> None:
    eye = torch.eye(3, dtype=torch.float64)
    c, s = math.cos(math.radians(12)), math.sin(math.radians(12))
    Rz = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    assert abs(float(g.rotation_error_deg(Rz, eye)) - 12) < 1e-9
    t = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    assert abs(float(g.translation_error_deg(-t, t))) < 1e-9  # sign-invariant
    assert abs(float(g.translation_error_deg(torch.tensor([1.0, 1, 0], dtype=torch.float64), t)) - 45) < 1e-9
    assert abs(float(g.pose_error_deg(Rz, t, eye, t)) - 12) < 1e-9
    m = g.mean_average_precision([1.0, 7.0, 12.0, 30.0])
    assert m["mAP@5"] == 0.25
    assert abs(m["mAP@10"] - (0.25 + 0.5) / 2) < 1e-12
    assert abs(m["mAP@20"] - (0.25 + 0.5 + 0.75 + 0.75) / 4) < 1e-12
