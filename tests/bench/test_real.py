"""`n3 bench --task real`: real noisy/clean pairs (``*_real`` / ``*_mean``), no synthetic noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from n3cli.bench import datasets
from n3cli.bench.datasets import DatasetError, real_pairs, resolve_dataset
from n3cli.bench.methods import build_method
from n3cli.bench.run import REAL_SETTING, BenchConfig, BenchError, run_bench, setting_key, setting_label, to_json
from n3cli.cli.app import app
from n3cli.cli.bench import fallback_command, parse_request
from n3cli.imaging import metrics
from n3cli.imaging.io import read_image, write_image

from ..conftest import DATA, need, shipped_tiny_default, tiny_color_weights, tiny_nlf_weights
from .conftest import textured

runner = CliRunner()


def _pairs_folder(root: Path, n: int = 2, sigma: float = 15.0) -> Path:
    """``p{i}_real.png`` (clean + Gaussian noise, 8-bit) beside ``p{i}_mean.png`` (clean), 40x48 RGB."""
    folder = root / "pairs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        clean = textured(40, 48, 3, 20 + i)
        noisy = np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1).astype(np.float32)
        write_image(folder / f"p{i}_mean.png", clean)
        write_image(folder / f"p{i}_real.png", noisy)
    return folder


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return _pairs_folder(tmp_path)


def test_pairing_and_resolution(pairs: Path, tmp_path: Path) -> None:
    write_image(pairs / "lone_real.png", textured(40, 48, 3, 1))  # no *_mean partner: ignored
    write_image(pairs / "other.png", textured(40, 48, 3, 2))
    assert [(a.name, b.name) for a, b in real_pairs(pairs)] == [("p0_real.png", "p0_mean.png"),
                                                                ("p1_real.png", "p1_mean.png")]
    ds = resolve_dataset(str(pairs), task="real")
    assert ds.name == "pairs" and ds.spec is None and [f.name for f in ds.files] == ["p0_real.png", "p1_real.png"]
    assert len(resolve_dataset(str(pairs)).files) == 6  # other tasks: every image of the folder, as before
    (tmp_path / "plain").mkdir()
    write_image(tmp_path / "plain" / "a.png", textured(8, 8, 3, 0))
    with pytest.raises(DatasetError, match="no \\*_real/\\*_mean pairs in") as err:
        resolve_dataset(str(tmp_path / "plain"), task="real")
    assert "\n" not in str(err.value)


def test_registered_set_under_a_data_root(tmp_path: Path) -> None:
    """PolyU-val lists its noisy files (one per pair; upper-case .JPG counts as .jpg); a partial copy warns."""
    folder = tmp_path / "PolyU-val"
    folder.mkdir()
    for i in range(2):
        for kind in ("real", "mean"):
            write_image(folder / f"cam_{i}_{kind}.JPG", textured(16, 16, 3, i))
    ds = resolve_dataset("PolyU-val", tmp_path)
    assert ds.spec is datasets.REGISTRY["PolyU-val"] and [f.name for f in ds.files] == ["cam_0_real.JPG",
                                                                                         "cam_1_real.JPG"]
    assert not ds.complete and ds.warning and "2 noisy/clean pairs, expected 22" in ds.warning
    assert datasets.local_folder(ds.spec, tmp_path) == folder
    (tmp_path / "Set12").mkdir()
    write_image(tmp_path / "Set12" / "01.png", textured(8, 8, 1, 0))
    with pytest.raises(DatasetError, match="no \\*_real/\\*_mean pairs"):  # a set without pairs, for task real
        resolve_dataset("Set12", tmp_path, task="real")
    with pytest.raises(DatasetError, match="22 noisy/clean pairs"):
        resolve_dataset("PolyU-val", tmp_path / "nowhere")


def test_noisy_scores_the_8bit_files(pairs: Path) -> None:
    ds = resolve_dataset(str(pairs), task="real")
    res = run_bench(ds, [build_method("noisy", "real")], BenchConfig("real", [REAL_SETTING]))
    (summary,) = res.summaries
    want = [metrics.psnr(read_image(pairs / f"p{i}_real.png").pixels, read_image(pairs / f"p{i}_mean.png").pixels)
            for i in range(2)]
    assert summary.images == 2 and summary.psnr == pytest.approx(float(np.mean(want)), abs=1e-9)
    assert 24 < summary.psnr < 27 and 0 < summary.ssim < 1  # σ 15: 20·log10(255/15) = 24.6 dB (a bit more clipped)
    assert summary.setting == REAL_SETTING and summary.paper_psnr is None and summary.full_set
    assert setting_label("real", REAL_SETTING) == "real" and setting_key("real", REAL_SETTING) == "real"
    (record,) = json.loads(to_json(res))
    assert record["setting"] == "real" and "sigma" not in record and record["task"] == "real"
    with pytest.raises(BenchError, match="no settings"):
        run_bench(ds, [build_method("noisy", "real")], BenchConfig("real", [25.0]))
    with pytest.raises(BenchError, match="not the noisy file"):  # a folder resolved for another task
        run_bench(resolve_dataset(str(pairs)), [build_method("noisy", "real")], BenchConfig("real", [REAL_SETTING]))


def test_model_methods(pairs: Path, tmp_path: Path) -> None:
    """A gray conditional model (opponent colour, σ estimated) and a colour blind-capable one, no σ given."""
    gray, colour = tiny_nlf_weights(tmp_path, "tinyg"), tiny_color_weights(tmp_path, "tinyc")
    methods = [build_method(f"weights:{gray}", "real"), build_method(f"n3net:{colour}", "real")]
    assert [m.label for m in methods] == ["tinyg", "tinyc"] and all(m.paper is None for m in methods)
    assert "estimated" in methods[0].description and "blind" in methods[1].description
    ds = resolve_dataset(str(pairs), task="real")
    res = run_bench(ds, methods, BenchConfig("real", [REAL_SETTING], limit=1))
    assert [s.method for s in res.summaries] == ["tinyg", "tinyc"]
    assert all(np.isfinite(s.psnr) and s.images == 1 and not s.full_set for s in res.summaries)


@pytest.mark.parametrize("color", ["rgb", "opponent"])
def test_a_gray_model_with_a_colour_mode(pairs: Path, tmp_path: Path, color: str) -> None:
    """``n3 bench --task real --color rgb|opponent`` with a gray model (the plan carries the mode)."""
    from n3cli.bench.methods import MethodOptions

    gray = tiny_nlf_weights(tmp_path, "tinyg")
    method = build_method(f"weights:{gray}", "real", MethodOptions(device="cpu", color=color))
    ds = resolve_dataset(str(pairs), task="real")
    res = run_bench(ds, [method], BenchConfig("real", [REAL_SETTING], limit=1))
    assert np.isfinite(res.summaries[0].psnr)


def test_n3net_is_the_colour_default(pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``n3net`` loads the registry's denoise-color default, falling back to the gray denoise default."""
    shipped_tiny_default(tmp_path / "weights", monkeypatch)
    method = build_method("n3net", "real")
    assert method.label == "n3net" and method.shipped and method.task == "real"
    res = run_bench(resolve_dataset(str(pairs), task="real"), [method], BenchConfig("real", [REAL_SETTING], limit=1))
    assert res.summaries[0].method == "n3net" and np.isfinite(res.summaries[0].psnr)


def test_bm3d_with_estimated_sigma(pairs: Path) -> None:
    pytest.importorskip("bm3d")
    ds = resolve_dataset(str(pairs), task="real")
    res = run_bench(ds, [build_method("noisy", "real"), build_method("bm3d", "real")],
                    BenchConfig("real", [REAL_SETTING], limit=1, warmup=False))
    noisy, bm3d = res.summaries
    assert bm3d.method == "bm3d-est" and bm3d.psnr > noisy.psnr


def test_cli(pairs: Path, tmp_path: Path) -> None:
    w = tiny_nlf_weights(tmp_path, "tinyg")
    js, md, cmp = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "cmp"
    res = runner.invoke(app, ["bench", "--task", "real", "--dataset", str(pairs), "--methods", f"noisy,weights:{w}",
                              "--json", str(js), "--markdown", str(md), "--save-images", str(cmp), "--quiet"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    records = json.loads(js.read_text())
    assert [(r["setting"], r["method"], r["images"]) for r in records] == [("real", "noisy", 2), ("real", "tinyg", 2)]
    assert " real " in res.output and "sigma" not in res.output
    lines = md.read_text().splitlines()
    assert "--task real" in lines[0] and "--sigma" not in lines[0] and len(lines) == 3 + 2
    assert "| real |" in lines[3]
    assert sorted(p.relative_to(cmp).as_posix() for p in cmp.rglob("*.png")) == [
        f"pairs/real/p{i}_real{z}.png" for i in range(2) for z in ("", "_zoom")]


def test_cli_refusals(pairs: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    write_image(tmp_path / "plain" / "a.png", textured(8, 8, 3, 0))
    cases = [(["--dataset", str(pairs), "--sigma", "25"], "do not apply to --task real"),
             (["--dataset", str(pairs), "--scale", "2"], "do not apply to --task real"),
             (["--dataset", str(pairs), "--nlf", "1e-3,1e-5"], "--nlf applies to --task raw"),
             (["--dataset", str(tmp_path / "plain")], "no *_real/*_mean pairs in"),
             (["--dataset", str(pairs), "--methods", "wavelet"], "method 'wavelet' is for task denoise, not real")]
    for args, message in cases:
        res = runner.invoke(app, ["bench", "--task", "real", *args, "--quiet"], env={"COLUMNS": "300"})
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, (args, res.output)


def test_request_and_fallback_command(pairs: Path) -> None:
    request = parse_request(str(pairs), None, "real", None, None, None, None, ["w.safetensors"], 2, "auto")
    assert request.settings == [REAL_SETTING] and request.names == ["noisy", "n3net", "bm3d", "weights:w.safetensors"]
    assert fallback_command(request) == ["n3", "bench", "--dataset", str(pairs), "--task", "real", "--methods",
                                         "noisy,n3net,bm3d,weights:w.safetensors", "--limit", "2"]


def test_data_list_shows_polyu(tmp_path: Path) -> None:
    folder = tmp_path / "PolyU-val"
    folder.mkdir()
    for kind in ("real", "mean"):
        write_image(folder / f"cam_0_{kind}.JPG", textured(16, 16, 3, 0))
    res = runner.invoke(app, ["data", "list", "--data-dir", str(tmp_path)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "PolyU-val" in line)
    assert "│ real " in row and "(1/22)" in res.output  # the path column may fold over lines


@pytest.mark.data
def test_polyu_val_from_shared_data() -> None:
    root = need(DATA / "PolyU-val").parent
    ds = resolve_dataset("PolyU-val", root)
    assert ds.spec is datasets.REGISTRY["PolyU-val"] and ds.complete and len(ds.files) == 22
    res = runner.invoke(app, ["bench", "--task", "real", "--dataset", "PolyU-val", "--data-dir", str(root),
                              "--limit", "2", "--methods", "noisy", "--quiet"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    result = run_bench(ds, [build_method("noisy", "real")], BenchConfig("real", [REAL_SETTING], limit=2))
    (summary,) = result.summaries
    assert summary.images == 2 and not summary.full_set and 25 < summary.psnr < 50
    assert [r.image for r in summary.per_image] == [f.name for f in ds.files[:2]]


def test_auto_method_gives_no_sigma(tmp_path: Path) -> None:
    """``auto:PATH`` on a Gaussian set: the model is given no σ (blind for a blind-capable one)."""
    from n3cli.bench.methods import MethodOptions

    weights = tiny_color_weights(tmp_path)
    method = build_method(f"auto:{weights}", "denoise", MethodOptions(device="cpu"))
    assert method.label == "tiny-color-auto" and "blind" in method.description
    noisy = np.random.default_rng(0).random((24, 20, 3)).astype(np.float32)
    assert method.run(noisy, 25.0).shape == noisy.shape
