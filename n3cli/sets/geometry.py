"""Two-view geometry for correspondence classification: weighted eight-point, pose, mAP.

Conventions: a correspondence is a row (x1, y1, x2, y2) of normalised image coordinates; camera 1
is [I | 0], camera 2 is [R | t], and the essential matrix E = [t]ₓ R satisfies x̂2ᵀ E x̂1 = 0 for
homogeneous x̂ = (x, y, 1). Everything here is batched over leading dimensions and runs in the
dtype it is given (the evaluation uses float64).

* :func:`weighted_eight_point` — the smallest eigenvector of XᵀWX (Hartley-normalised by default)
  projected onto the essential manifold (singular values (1, 1, 0)).
* :func:`decompose_essential` and :func:`select_pose` — the four (R, t) candidates, and the choice
  among them by a weighted cheirality vote (default), or by the ground truth ("oracle").
* :func:`pose_error_deg` — max(rotation angle error, angle between translation directions), the
  latter sign-invariant (in [0°, 90°]) as in Yi et al.'s evaluation.
* :func:`mean_average_precision` — Yi et al.'s mAP: mAP@θ = mean over τ ∈ {5°, 10°, …, θ} of the
  fraction of pairs whose pose error is below τ (the normalised cumulative histogram of errors
  in 5° bins, averaged up to θ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

PoseChoice = Literal["cheirality", "oracle"]


def skew(v: Tensor) -> Tensor:
    """[v]ₓ (..., 3, 3) with [v]ₓ a = v × a."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2)


def homogeneous(x: Tensor) -> tuple[Tensor, Tensor]:
    """(..., N, 4) correspondences -> homogeneous points of view 1 and view 2, each (..., N, 3)."""
    one = torch.ones_like(x[..., :1])
    return torch.cat([x[..., :2], one], -1), torch.cat([x[..., 2:4], one], -1)


def symmetric_epipolar_distance(x: Tensor, E: Tensor) -> Tensor:
    """(x̂2ᵀ E x̂1)² · (1 / |(E x̂1)₁,₂|² + 1 / |(Eᵀ x̂2)₁,₂|²): the sum of the squared distances of
    each point to the other's epipolar line. x (..., N, 4), E (..., 3, 3) -> (..., N).
    """
    p1, p2 = homogeneous(x)
    l2 = p1 @ E.transpose(-1, -2)  # epipolar lines in view 2: E x̂1
    l1 = p2 @ E  # epipolar lines in view 1: Eᵀ x̂2
    r = (p2 * l2).sum(-1)
    tiny = torch.finfo(x.dtype).tiny
    return r.square() * (1.0 / l2[..., :2].square().sum(-1).clamp_min(tiny) +
                         1.0 / l1[..., :2].square().sum(-1).clamp_min(tiny))


def _usable_weights(w: Tensor) -> Tensor:
    """Non-negative weights; a set whose weights are all zero falls back to uniform weights."""
    w = w.clamp_min(0.0)
    empty = w.sum(-1, keepdim=True) <= 0
    return torch.where(empty, torch.ones_like(w), w)


def hartley_transform(p: Tensor, w: Tensor) -> Tensor:
    """(..., 3, 3) similarity moving the weighted centroid of points p (..., N, 3) to the origin and
    their weighted mean distance to it to √2."""
    wn = w / w.sum(-1, keepdim=True)
    centre = (wn.unsqueeze(-1) * p[..., :2]).sum(-2)
    spread = (wn * (p[..., :2] - centre.unsqueeze(-2)).norm(dim=-1)).sum(-1)
    s = 2.0 ** 0.5 / spread.clamp_min(1e-12)
    T = torch.zeros(*p.shape[:-2], 3, 3, dtype=p.dtype, device=p.device)
    T[..., 0, 0], T[..., 1, 1], T[..., 2, 2] = s, s, 1.0
    T[..., :2, 2] = -s.unsqueeze(-1) * centre
    return T


def eight_point_vector(x: Tensor, w: Tensor, normalise: bool = False) -> Tensor:
    """The unit eigenvector e (..., 9) of XᵀWX with the smallest eigenvalue (row-major 3×3 matrix).

    Rows of X are kron(x̂2, x̂1), so that X e = x̂2ᵀ M x̂1. Differentiable (through ``eigh``); with
    ``normalise`` the matrix is brought back from Hartley-normalised coordinates and rescaled to
    unit norm. The sign is arbitrary.
    """
    w = _usable_weights(w)
    p1, p2 = homogeneous(x)
    if normalise:
        t1, t2 = hartley_transform(p1, w), hartley_transform(p2, w)
        p1, p2 = p1 @ t1.transpose(-1, -2), p2 @ t2.transpose(-1, -2)
    rows = (p2.unsqueeze(-1) * p1.unsqueeze(-2)).flatten(-2)  # (..., N, 9)
    xtwx = rows.transpose(-1, -2) @ (w.unsqueeze(-1) * rows)
    xtwx = 0.5 * (xtwx + xtwx.transpose(-1, -2))
    e = torch.linalg.eigh(xtwx)[1][..., 0]
    if normalise:
        m = t2.transpose(-1, -2) @ e.unflatten(-1, (3, 3)) @ t1
        e = m.flatten(-2)
        e = e / e.norm(dim=-1, keepdim=True)
    return e


def project_essential(M: Tensor) -> Tensor:
    """The nearest essential matrix (Frobenius): singular values replaced by (1, 1, 0), norm √2."""
    U, _, Vh = torch.linalg.svd(M)
    s = torch.tensor([1.0, 1.0, 0.0], dtype=M.dtype, device=M.device)
    return U @ (s.unsqueeze(-1) * Vh)


def weighted_eight_point(x: Tensor, w: Tensor, normalise: bool = True) -> Tensor:
    """Essential matrix (..., 3, 3) from correspondences x (..., N, 4) and weights w (..., N) >= 0."""
    return project_essential(eight_point_vector(x, w, normalise).unflatten(-1, (3, 3)))


def decompose_essential(E: Tensor) -> tuple[Tensor, Tensor]:
    """The four poses of E: rotations (..., 4, 3, 3) and unit translations (..., 4, 3), ordered
    (Ra, t), (Ra, -t), (Rb, t), (Rb, -t) with Ra = U W Vᵀ, Rb = U Wᵀ Vᵀ, t = U[:, 2]."""
    U, _, Vh = torch.linalg.svd(E)
    # det(U) = det(V) = +1 without changing E (the third singular value is zero).
    U = torch.cat([U[..., :2], U[..., 2:] * torch.linalg.det(U)[..., None, None]], -1)
    Vh = torch.cat([Vh[..., :2, :], Vh[..., 2:, :] * torch.linalg.det(Vh)[..., None, None]], -2)
    W = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=E.dtype, device=E.device)
    ra, rb = U @ W @ Vh, U @ W.T @ Vh
    t = U[..., 2]
    return torch.stack([ra, ra, rb, rb], -3), torch.stack([t, -t, t, -t], -2)


def triangulated_depths(x: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Depths (z1, z2), each (..., N), of the least-squares solution of z2 x̂2 - z1 R x̂1 = t."""
    p1, p2 = homogeneous(x)
    a = -(p1 @ R.transpose(-1, -2))
    b = p2
    aa, bb, ab = (a * a).sum(-1), (b * b).sum(-1), (a * b).sum(-1)
    at, bt = (a * t.unsqueeze(-2)).sum(-1), (b * t.unsqueeze(-2)).sum(-1)
    det = aa * bb - ab * ab
    det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
    return (bb * at - ab * bt) / det, (aa * bt - ab * at) / det


def rotation_error_deg(R: Tensor, R_gt: Tensor) -> Tensor:
    """Angle (degrees) of R R_gtᵀ, computed with atan2 (accurate near 0° and 180°)."""
    D = R @ R_gt.transpose(-1, -2)
    cos = (D.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    vee = torch.stack([D[..., 2, 1] - D[..., 1, 2], D[..., 0, 2] - D[..., 2, 0], D[..., 1, 0] - D[..., 0, 1]], -1)
    return torch.rad2deg(torch.atan2(vee.norm(dim=-1) / 2.0, cos))


def translation_error_deg(t: Tensor, t_gt: Tensor) -> Tensor:
    """Angle (degrees) between the lines spanned by t and t_gt: sign-invariant, in [0°, 90°]."""
    return torch.rad2deg(torch.atan2(torch.linalg.cross(t, t_gt).norm(dim=-1), (t * t_gt).sum(-1).abs()))


def pose_error_deg(R: Tensor, t: Tensor, R_gt: Tensor, t_gt: Tensor) -> Tensor:
    """max(rotation error, translation direction error) in degrees; NaN (degenerate) -> 180°."""
    err = torch.maximum(rotation_error_deg(R, R_gt), translation_error_deg(t, t_gt))
    return torch.nan_to_num(err, nan=180.0)


def select_pose(E: Tensor, x: Tensor, w: Tensor, choose: PoseChoice = "cheirality", R_gt: Tensor | None = None,
                t_gt: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One (R, t) of E's four candidates.

    ``cheirality``: the candidate that puts the most weight of correspondences (weights w, zero
    weight = not used) in front of both cameras. ``oracle``: the one with the smallest pose error
    against (R_gt, t_gt).
    """
    Rs, ts = decompose_essential(E)
    if choose == "oracle":
        if R_gt is None or t_gt is None:
            raise ValueError("choose='oracle' needs R_gt and t_gt")
        score = -pose_error_deg(Rs, ts, R_gt.unsqueeze(-3), t_gt.unsqueeze(-2))
    elif choose == "cheirality":
        w = _usable_weights(w)
        z1, z2 = triangulated_depths(x.unsqueeze(-3), Rs, ts)  # (..., 4, N)
        score = (w.unsqueeze(-2) * ((z1 > 0) & (z2 > 0)).to(w.dtype)).sum(-1)
    else:
        raise ValueError(f"unknown pose choice {choose!r}; expected cheirality or oracle")
    best = score.argmax(-1)
    R = Rs.gather(-3, best[..., None, None, None].expand(*best.shape, 1, 3, 3)).squeeze(-3)
    t = ts.gather(-2, best[..., None, None].expand(*best.shape, 1, 3)).squeeze(-2)
    return R, t


def estimate_pose(x: Tensor, w: Tensor, choose: PoseChoice = "cheirality", R_gt: Tensor | None = None,
                  t_gt: Tensor | None = None, normalise: bool = True) -> tuple[Tensor, Tensor]:
    """Weighted eight-point, then the pose choice of :func:`select_pose`."""
    E = weighted_eight_point(x, w, normalise)
    return select_pose(E, x, w, choose, R_gt, t_gt)


def mean_average_precision(errors_deg: Tensor | Sequence[float], thresholds: Sequence[int] = (5, 10, 20),
                           step: int = 5) -> dict[str, float]:
    """{"mAP@5": …, …}: mAP@θ = mean over τ ∈ {step, 2·step, …, θ} of the fraction of errors < τ."""
    err = torch.as_tensor(errors_deg, dtype=torch.float64).flatten()
    out = {}
    for th in thresholds:
        taus = torch.arange(step, th + 1, step, dtype=torch.float64)
        acc = (err.unsqueeze(0) < taus.unsqueeze(1)).to(torch.float64).mean(1)
        out[f"mAP@{th}"] = float(acc.mean()) if err.numel() else float("nan")
    return out
