"""The runner: protocol, determinism, aggregation, reports, comparison images, memory sampling."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from n3cli.bench import methods as methods_mod
from n3cli.bench.datasets import resolve_dataset
from n3cli.bench.methods import Method, MethodError, MethodOptions, build_method, build_methods
from n3cli.bench.paper import TABLE3, paper_psnr
from n3cli.bench.run import BenchConfig, BenchError, PeakMemory, make_noisy, run_bench, to_json, to_markdown
from n3cli.imaging.io import read_image


def _box(x: np.ndarray, sigma: float) -> np.ndarray:
    """A tiny fake denoiser: 3-tap average along both axes."""
    y = (np.roll(x, 1, 0) + x + np.roll(x, -1, 0)) / 3
    return (np.roll(y, 1, 1) + y + np.roll(y, -1, 1)) / 3


FAKE = Method("box", "box", "denoise", _box, paper="N3Net")


def test_runner_is_deterministic(tiny_gray: Path) -> None:
    ds = resolve_dataset(str(tiny_gray))
    config = BenchConfig("denoise", [15.0, 30.0])
    a = run_bench(ds, [FAKE], config)
    b = run_bench(ds, [FAKE], config)
    assert [r.psnr for r in a.images] == [r.psnr for r in b.images]
    assert [r.ssim for r in a.images] == [r.ssim for r in b.images]
    assert len(a.images) == 4 and len(a.summaries) == 2
    assert a.summaries[0].psnr > a.summaries[1].psnr  # more noise, lower PSNR
    assert a.summaries[0].paper_psnr is None  # a plain folder has no paper figures


def test_noise_protocol() -> None:
    clean = np.full((64, 64, 1), 0.99, dtype=np.float32)
    n1 = make_noisy(clean, 25, "set", "a.png")
    assert np.array_equal(n1, make_noisy(clean, 25.0, "set", "a.png"))  # 25 and 25.0: one seed
    assert not np.array_equal(n1, make_noisy(clean, 25, "set", "b.png"))
    assert n1.max() > 1.0  # no clipping
    assert abs(float((n1 - clean).std()) * 255 - 25) < 1.5
    assert len(np.unique(n1)) > 1000  # no quantisation


def test_sr_bicubic_shapes(tiny_rgb: Path) -> None:
    ds = resolve_dataset(str(tiny_rgb))
    res = run_bench(ds, [build_method("bicubic", "sr")], BenchConfig("sr", [2.0, 3.0]))
    assert [s.setting for s in res.summaries] == [2.0, 3.0]
    assert all(20 < s.psnr < 60 and 0 < s.ssim <= 1 for s in res.summaries)
    with pytest.raises(BenchError, match="task denoise, not sr"):
        run_bench(ds, [FAKE], BenchConfig("sr", [2.0]))


def test_reports(tiny_gray: Path) -> None:
    ds = resolve_dataset(str(tiny_gray))
    res = run_bench(ds, [FAKE, build_method("noisy", "denoise")], BenchConfig("denoise", [20.0]))
    records = json.loads(to_json(res))
    assert [r["method"] for r in records] == ["box", "noisy"]
    keys = {"dataset", "task", "method", "sigma", "psnr", "ssim", "images", "seconds", "megapixels_per_second",
            "peak_mb", "paper_psnr"}
    assert keys <= set(records[0]) and records[0]["sigma"] == 20 and records[0]["images"] == 2
    per = records[0]["per_image"]  # every image's own figures; their mean is the record's
    assert [r["image"] for r in per] == sorted(r["image"] for r in per) and len(per) == 2
    assert abs(sum(r["psnr"] for r in per) / 2 - records[0]["psnr"]) < 1e-9
    assert all(0 < r["ssim"] <= 1 and r["seconds"] >= 0 for r in per)
    md = to_markdown(res, "n3 bench --dataset tiny").splitlines()
    assert md[0] == "<!-- n3 bench --dataset tiny -->"
    assert md[1].startswith("| dataset | setting | method | PSNR |") and len(md) == 5


def test_save_images(tiny_gray: Path, tmp_path: Path) -> None:
    ds = resolve_dataset(str(tiny_gray))
    out = tmp_path / "cmp"
    res = run_bench(ds, [FAKE, build_method("noisy", "denoise")], BenchConfig("denoise", [25.0], limit=1,
                                                                                 save_images=out))
    strip = out / "tiny" / "sigma25" / "im0.png"
    assert sorted(res.saved) == sorted([strip, strip.with_name("im0_zoom.png")])
    img = read_image(strip).pixels
    assert img.shape[1] == 3 * 48 + 2 * 4 and img.shape[0] > 40  # clean | noisy | box, captions below
    assert read_image(strip.with_name("im0_zoom.png")).pixels.shape[1] == 3 * 40 * 4 + 2 * 4


def test_methods_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import n3cli.weights

    monkeypatch.setattr(n3cli.weights, "manifest", lambda: {"default": {}, "models": {}})
    built, missing = build_methods(["n3net", "noisy"], "denoise")
    assert [m.name for m in built] == ["noisy"] and "no shipped weights" in missing[0][1]
    built, missing = build_methods(["official"], "denoise", MethodOptions(official_dir=tmp_path))
    assert not built and "n3net_sigma" in missing[0][1]
    with pytest.raises(MethodError, match="unknown method 'foo'"):
        build_method("foo", "denoise")
    with pytest.raises(MethodError, match="for task sr"):
        build_method("bicubic", "denoise")
    assert set(methods_mod.known_methods("denoise")) >= {"n3net", "weights", "official", "bm3d", "nlm",
                                                          "wavelet", "noisy"}


@pytest.mark.parametrize("name", ["nlm", "wavelet"])
def test_classical_methods_gray_and_rgb(name: str) -> None:
    m = build_method(name, "denoise")
    rng = np.random.default_rng(0)
    for c in (1, 3):
        clean = np.full((24, 24, c), 0.5, dtype=np.float32)
        noisy = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
        out = m.run(noisy, 25.5)
        assert out.shape == noisy.shape and np.abs(out - clean).mean() < np.abs(noisy - clean).mean()


def test_paper_table() -> None:
    assert paper_psnr("Set12", "denoise", 25, "N3Net") == 30.55
    assert paper_psnr("BSD68", "denoise", 70.0, "BM3D") == 24.46
    assert paper_psnr("Set5", "sr", 4, "Bicubic") == 28.43
    assert paper_psnr("BSD100", "sr", 2, "WSD-SR") is None
    assert paper_psnr("Set12", "denoise", 15, "N3Net") is None
    assert len(TABLE3) == 3


def test_peak_memory_sees_allocations() -> None:
    if not Path("/proc/self/statm").exists():
        pytest.skip("no /proc")
    with PeakMemory() as mem:
        a = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
        time.sleep(0.05)  # the sampler thread runs meanwhile
        del a
    assert mem.mb > 30  # seen by the background sampler although freed before the end
    with PeakMemory() as kept:
        b = np.ones(40 * 2**20 // 8)
    assert kept.mb > 30 and b.size  # seen by the final sample


def test_bm3d_gray_and_rgb() -> None:
    pytest.importorskip("bm3d")
    m = build_method("bm3d", "denoise")
    rng = np.random.default_rng(1)
    for c in (1, 3):
        clean = np.full((32, 32, c), 0.5, dtype=np.float32)
        noisy = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
        out = m.run(noisy, 25.5)
        assert out.shape == noisy.shape and out.dtype == np.float32
        assert np.abs(out - clean).mean() < 0.5 * np.abs(noisy - clean).mean()
