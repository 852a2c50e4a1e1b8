"""Synthetic two-view correspondences (a stand-in for the image pairs of paper Sec. 5.5).

Every sample is drawn from its own seeded generator, so a sample is a pure function of
(split, index, config):

* Camera 1 is ``[I | 0]``, camera 2 is ``[R | t]`` with a rotation by an angle uniform in
  ``[0, max_rotation_deg]`` about a uniformly random axis and a translation of length
  ``baseline`` in a uniformly random direction. Both are pinhole cameras with focal length
  ``focal`` px and the principal point in the centre of a ``width`` × ``height`` image.
* 3D points are drawn uniformly in camera 1's frustum (pixel uniform in the image, depth uniform
  in ``depth``); only points that camera 2 also sees (in front of it, inside its image) are kept.
  A pose whose views overlap in less than ``min_overlap`` of a probe of points is redrawn, so very
  large rotations that turn the cameras apart are rarer than the uniform angle suggests.
* Inliers are the true projections plus Gaussian pixel noise (``noise_px`` in each coordinate of
  both views); outliers pair two independent pixels uniform in the two images. The outlier ratio
  is uniform in ``outlier_ratio``; the N correspondences are shuffled.
* Coordinates are normalised image coordinates ((u - c_x) / f, (v - c_y) / f), as in Yi et al.
* Labels are those of Yi et al.: 1 where the symmetric epipolar distance under the true essential
  matrix E = [t]ₓ R is below ``threshold`` (normalised units², see
  :func:`n3cli.sets.geometry.symmetric_epipolar_distance`), whatever the sample was generated as.
  The default 1e-4 is a distance to the epipolar lines of about 0.01 / √2 ≈ 7e-3 normalised units
  in each view, i.e. ≈ 3.5 px at f = 500 px: ≈ 2.5 σ of the point-to-line noise for 1 px noise
  (≈ 1 % of the noisy inliers fall outside, ≈ 1 % of random pairs fall inside).

Splits are disjoint ranges of generator seeds (:data:`SPLITS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from .geometry import skew, symmetric_epipolar_distance

#: First seed and number of samples of each split (disjoint seed ranges).
SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000),
    "val": (1_000_000, 10_000),
    "test": (2_000_000, 10_000),
}


@dataclass(frozen=True)
class TwoViewConfig:
    """Parameters of the synthetic scenes (defaults: a 640×480 camera with f = 500 px)."""

    n: int = 1000
    focal: float = 500.0
    width: int = 640
    height: int = 480
    depth: tuple[float, float] = (4.0, 8.0)
    baseline: float = 1.0
    max_rotation_deg: float = 30.0
    noise_px: float = 1.0
    outlier_ratio: tuple[float, float] = (0.5, 0.9)
    threshold: float = 1e-4
    min_overlap: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CorrespondenceBatch:
    """A batch of B sets of N correspondences and their ground truth.

    ``x`` (B, N, 4) float32 rows (x1, y1, x2, y2) in normalised coordinates; ``labels`` (B, N)
    float32 in {0, 1}; ``generated`` (B, N) bool: drawn as an inlier; ``R`` (B, 3, 3), ``t`` (B, 3)
    (unit length) and ``E`` (B, 3, 3) (unit Frobenius norm) in float64; ``outlier_ratio`` (B,).
    """

    x: Tensor
    labels: Tensor
    generated: Tensor
    R: Tensor
    t: Tensor
    E: Tensor
    outlier_ratio: Tensor

    def to(self, device: torch.device | str) -> CorrespondenceBatch:
        return CorrespondenceBatch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return self.x.shape[0]


def split_seed(split: str, index: int) -> int:
    """The generator seed of sample ``index`` of ``split``; raises if the index is out of range."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    first, size = SPLITS[split]
    if not 0 <= index < size:
        raise ValueError(f"{split} has samples 0..{size - 1}, got index {index}")
    return first + index


def random_rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """A rotation by an angle uniform in [0, max] about a uniformly random axis (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, max_angle_deg))
    k = skew(torch.from_numpy(axis)).numpy()
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _frustum_points(rng: np.random.Generator, cfg: TwoViewConfig, m: int) -> np.ndarray:
    """m points (m, 3) uniform over camera 1's pixels and depths."""
    u = rng.uniform(0.0, cfg.width, m)
    v = rng.uniform(0.0, cfg.height, m)
    z = rng.uniform(*cfg.depth, m)
    return np.stack([(u - cfg.width / 2) / cfg.focal * z, (v - cfg.height / 2) / cfg.focal * z, z], axis=1)


def _project_visible(points2: np.ndarray, cfg: TwoViewConfig) -> tuple[np.ndarray, np.ndarray]:
    """Normalised projections of camera-2 points and whether they fall into camera 2's image."""
    z = points2[:, 2]
    safe = np.where(z > 1e-3, z, 1.0)
    xy = points2[:, :2] / safe[:, None]
    half_w, half_h = cfg.width / 2 / cfg.focal, cfg.height / 2 / cfg.focal
    visible = (z > 1e-3) & (np.abs(xy[:, 0]) <= half_w) & (np.abs(xy[:, 1]) <= half_h)
    return xy, visible


def _uniform_image(rng: np.random.Generator, cfg: TwoViewConfig, m: int) -> np.ndarray:
    """m normalised coordinates uniform over the image."""
    u = rng.uniform(0.0, cfg.width, m)
    v = rng.uniform(0.0, cfg.height, m)
    return np.stack([(u - cfg.width / 2) / cfg.focal, (v - cfg.height / 2) / cfg.focal], axis=1)


def make_sample(split: str, index: int, cfg: TwoViewConfig = TwoViewConfig()) -> dict[str, np.ndarray]:
    """One set of ``cfg.n`` correspondences (numpy, float64) with its ground truth (see the module)."""
    rng = np.random.default_rng(split_seed(split, index))
    probe = 256
    for _ in range(1000):
        rot = random_rotation(rng, cfg.max_rotation_deg)
        t = _unit(rng) * cfg.baseline
        pts = _frustum_points(rng, cfg, probe)
        _, visible = _project_visible(pts @ rot.T + t, cfg)
        if visible.mean() >= cfg.min_overlap:
            break
    else:  # pragma: no cover - only with a config whose views never overlap
        raise ValueError("could not draw a pose whose two views overlap; lower min_overlap")
    ratio = rng.uniform(*cfg.outlier_ratio)
    n_out = int(round(ratio * cfg.n))
    n_in = cfg.n - n_out
    kept = [pts[visible]]
    have = int(visible.sum())
    while have < n_in:
        more = _frustum_points(rng, cfg, max(probe, 2 * (n_in - have)))
        _, vis = _project_visible(more @ rot.T + t, cfg)
        kept.append(more[vis])
        have += int(vis.sum())
    x1_3d = np.concatenate(kept)[:n_in]
    x2, _ = _project_visible(x1_3d @ rot.T + t, cfg)
    x1 = x1_3d[:, :2] / x1_3d[:, 2:]
    sigma = cfg.noise_px / cfg.focal
    inliers = np.concatenate([x1, x2], axis=1) + rng.normal(0.0, sigma, (n_in, 4))
    outliers = np.concatenate([_uniform_image(rng, cfg, n_out), _uniform_image(rng, cfg, n_out)], axis=1)
    x = np.concatenate([inliers, outliers])
    generated = np.arange(cfg.n) < n_in
    order = rng.permutation(cfg.n)
    x, generated = x[order], generated[order]
    t_unit = t / np.linalg.norm(t)
    ess = skew(torch.from_numpy(t_unit)).numpy() @ rot
    ess /= np.linalg.norm(ess)
    dist = symmetric_epipolar_distance(torch.from_numpy(x), torch.from_numpy(ess)).numpy()
    return {"x": x, "labels": (dist < cfg.threshold).astype(np.float64), "generated": generated, "R": rot,
            "t": t_unit, "E": ess, "outlier_ratio": np.float64(ratio)}


def make_batch(split: str, indices: Sequence[int], cfg: TwoViewConfig = TwoViewConfig()) -> CorrespondenceBatch:
    """Samples ``indices`` of ``split`` stacked into a :class:`CorrespondenceBatch`."""
    samples = [make_sample(split, int(i), cfg) for i in indices]

    def stack(key: str) -> Tensor:
        return torch.from_numpy(np.stack([s[key] for s in samples]))

    return CorrespondenceBatch(x=stack("x").float(), labels=stack("labels").float(), generated=stack("generated"),
                               R=stack("R"), t=stack("t"), E=stack("E"), outlier_ratio=stack("outlier_ratio"))
