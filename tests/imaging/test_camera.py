"""The camera-noise simulation (unprocess → raw noise → process → JPEG) used to train real-photo models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("colour_demosaicing")

from n3cli.imaging import camera  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scene(h: int = 48, w: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * x * y])


def test_process_inverts_unprocess_where_demosaicking_is_exact() -> None:
    """On a flat colour every demosaicking method is exact, so the pipeline both ways is the identity."""
    cam = camera.sample_camera(_gen(3))
    for method in camera.DEMOSAIC:
        cam_m = camera.Camera(**{**cam.__dict__, "demosaic": method})
        flat = torch.tensor([0.7, 0.45, 0.2]).view(3, 1, 1).expand(3, 16, 16).clone()
        back = camera.process(camera.unprocess(flat, cam_m), cam_m)
        assert torch.allclose(back, flat, atol=1e-4), method


def test_camera_noise_is_correlated_and_keeps_the_image() -> None:
    """The noise after demosaicking is spatially correlated (white noise has none); the tone curve bends its mean
    a little (by concavity, as in a camera), by well under a tenth of its σ."""
    clean = _scene()
    corr, shifts = [], []
    for seed in range(4):
        g = _gen(seed)
        cam = camera.Camera(**{**camera.sample_camera(g).__dict__, "jpeg_quality": None, "sharpen": 0.0,
                               "demosaic": "bilinear", "a": 1e-3, "b": 1e-5, "nr_luma": 0.0,
                               "nr_chroma": 0.0})
        noise = camera.camera_noisy(clean, cam, g) - clean
        n = noise - noise.mean(dim=(1, 2), keepdim=True)
        corr.append(float((n[:, :, 1:] * n[:, :, :-1]).mean() / n.square().mean()))
        shifts.append(float(noise.mean().abs() / noise.std()))
    assert min(corr) > 0.2  # neighbouring pixels share noise through the demosaicking
    assert max(shifts) < 0.1


def test_camera_noise_is_reproducible_and_in_range() -> None:
    clean = _scene(31, 45)  # odd sides are padded for the mosaic and cropped back
    a = camera.camera_noisy(clean, camera.sample_camera(_gen(1)), _gen(2))
    b = camera.camera_noisy(clean, camera.sample_camera(_gen(1)), _gen(2))
    assert a.shape == clean.shape and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_sampled_cameras_stay_in_the_published_ranges() -> None:
    g = _gen(5)
    for _ in range(50):
        cam = camera.sample_camera(g)
        assert camera.SHOT_RANGE[0] <= cam.a <= camera.SHOT_RANGE[1]
        assert 1.9 <= cam.red_gain <= 2.4 and 1.5 <= cam.blue_gain <= 1.9
        assert cam.jpeg_quality is None or 60 <= cam.jpeg_quality <= 100
        rows = torch.tensor(cam.rgb2cam).sum(1)
        assert torch.allclose(rows, torch.ones(3), atol=1e-6)


def test_noise_reduction_removes_fine_noise_and_keeps_its_mean() -> None:
    """In-camera NR on a noise image: the fine-scale part (what a wavelet MAD estimator sees) mostly goes, chroma
    more than luma; the mean stays."""
    g = _gen(7)
    noise = torch.randn(3, 64, 64, generator=g) * 0.02 + 0.001
    out = camera.noise_reduction(noise, 1.0, 2.5)
    fine = lambda t: (t[:, 1:, 1:] - t[:, :-1, 1:] - t[:, 1:, :-1] + t[:, :-1, :-1]).std()  # noqa: E731
    assert float(fine(out)) < 0.3 * float(fine(noise))
    assert torch.allclose(out.mean(), noise.mean(), atol=1e-4)
    assert torch.allclose(camera.noise_reduction(noise, 0.0, 0.0), noise, atol=1e-6)
    grey = noise.mean(0, keepdim=True).expand(3, -1, -1)  # pure luma noise: the chroma blur leaves it
    assert torch.allclose(camera.noise_reduction(grey, 0.0, 3.0), grey, atol=1e-6)


def test_mixed_noise_reduction_keeps_a_share_of_the_fine_noise() -> None:
    """keep = 0 is the plain blur, keep = 1 the noise itself; in between the fine part scales by keep while the
    coarse part stays whole."""
    g = _gen(8)
    noise = torch.randn(3, 64, 64, generator=g) * 0.02
    blur = camera.noise_reduction(noise, 2.0, 3.0)
    assert torch.allclose(camera.noise_reduction(noise, 2.0, 3.0, 0.0, 0.0), blur)
    assert torch.allclose(camera.noise_reduction(noise, 2.0, 3.0, 1.0, 1.0), noise, atol=1e-6)
    half = camera.noise_reduction(noise, 2.0, 3.0, 0.5, 0.5)
    assert torch.allclose(half - blur, 0.5 * (noise - blur), atol=1e-6)


def test_mixed_noise_reduction_cameras() -> None:
    """nr_mixed_fraction = 1: every camera gets the mixed-scale reduction within NR_MIXED; 0: the random stream
    (and so every camera of a run without it) is what it was."""
    g = _gen(9)
    for _ in range(30):
        cam = camera.sample_camera(g, nr_mixed_fraction=1.0)
        for field, (lo, hi) in camera.NR_MIXED.items():
            assert lo <= getattr(cam, field) <= hi
    assert camera.sample_camera(_gen(10)) == camera.sample_camera(_gen(10), nr_mixed_fraction=0.0)
    plain = camera.sample_camera(_gen(11), nr_fraction=1.0, nr_mixed_fraction=1.0)  # the one-blur reduction wins
    assert 0.5 <= plain.nr_luma <= 2.0 and plain.nr_keep_luma == 0.0
    # the simulated noise with it is coarse: luma autocorrelation at lag 2 px well above the unreduced noise's
    clean = torch.full((3, 96, 96), 0.4)
    def lag2(cam: camera.Camera) -> float:
        d = camera.camera_noisy(clean, cam, _gen(12)) - clean
        y = d.mean(0) - d.mean()
        return float((y[:, 2:] * y[:, :-2]).mean() / (y * y).mean())
    base = camera.sample_camera(_gen(13), jpeg_fraction=0.0, sharpen_fraction=0.0)
    mixed = dataclasses.replace(base, nr_luma=2.0, nr_keep_luma=0.3, nr_chroma=3.0)
    assert lag2(mixed) > lag2(base) + 0.15
