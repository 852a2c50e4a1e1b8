"""SR model methods of the benchmark: the shipped default (or its absence) and weights files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import n3cli.weights
from n3cli.bench.datasets import resolve_dataset
from n3cli.bench.methods import build_method, build_methods
from n3cli.bench.run import BenchConfig, run_bench
from n3cli.cli.app import app
from n3cli.errors import N3Error
from n3cli.nn.nets import n3net_light, n3net_sr
from n3cli.weights import ModelInfo, file_sha256, save_weights


@pytest.fixture(scope="module")
def sr_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = n3net_sr(depth=3, features=8, embed_features=8).eval()
    path = tmp_path_factory.mktemp("w") / "tiny-sr.safetensors"
    return save_weights(path, model, ModelInfo(name="tiny-sr", task="sr"))


def test_n3net_sr_unavailable_without_shipped_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(n3cli.weights, "manifest", lambda: {"default": {}, "models": {}})
    built, missing = build_methods(["bicubic", "n3net"], "sr")
    assert [m.name for m in built] == ["bicubic"]
    assert missing[0][0] == "n3net" and "no shipped weights for task 'sr'" in missing[0][1]


def test_shipped_default_and_weights_file(monkeypatch: pytest.MonkeyPatch, sr_weights: Path, tiny_rgb: Path) -> None:
    reg = {"default": {"sr": "tiny-sr"}, "models": {"tiny-sr": {"file": sr_weights.name, "task": "sr",
                                                                "sha256": file_sha256(sr_weights)}}}
    monkeypatch.setattr(n3cli.weights, "manifest", lambda: reg)
    monkeypatch.setattr(n3cli.weights, "weights_dir", lambda: sr_weights.parent)
    shipped = build_method("n3net", "sr")
    assert shipped.label == "n3net" and shipped.task == "sr" and shipped.paper == "N3Net"
    assert shipped.warning(4.0) is None and "outside the trained scales" in (shipped.warning(5.0) or "")
    from_file = build_method(f"weights:{sr_weights}", "sr")
    res = run_bench(resolve_dataset(str(tiny_rgb)), [shipped, from_file], BenchConfig("sr", [2.0], warmup=False))
    assert [(s.method, s.images) for s in res.summaries] == [("n3net", 2), ("tiny-sr", 2)]
    assert all(math.isfinite(s.psnr) for s in res.summaries)


def test_denoise_weights_refused_for_sr(tmp_path: Path) -> None:
    path = save_weights(tmp_path / "dn.safetensors", n3net_light(depth=3, features=8, embed_features=8),
                        ModelInfo(name="dn"))
    with pytest.raises(N3Error, match="not 'sr'"):
        build_method(f"weights:{path}", "sr")


def test_bench_cli_sr_weights(sr_weights: Path, tiny_gray: Path, tmp_path: Path) -> None:
    js = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "--task", "sr", "--dataset", str(tiny_gray), "--scale", "2",
                                   "--methods", "bicubic", "--weights", str(sr_weights), "--json", str(js),
                                   "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert [(r["method"], r["scale"]) for r in json.loads(js.read_text())] == [("bicubic", 2), ("tiny-sr", 2)]


def test_a_shipped_vdsr_default_is_labelled_and_compared_as_vdsr(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path, tiny_gray: Path) -> None:
    """The shipped default of another architecture is not called n3net: its rows carry the model's name and
    compare with the paper's VDSR column; its records are still marked as the shipped default's."""
    from n3cli.nn.nets import vdsr

    path = save_weights(tmp_path / "light.safetensors", vdsr(depth=3, features=8, bn=True).eval(),
                        ModelInfo(name="vdsr-light", task="sr"))
    reg = {"default": {"sr": "vdsr-light"},
           "models": {"vdsr-light": {"file": path.name, "task": "sr", "sha256": file_sha256(path)}}}
    monkeypatch.setattr(n3cli.weights, "manifest", lambda: reg)
    monkeypatch.setattr(n3cli.weights, "weights_dir", lambda: tmp_path)
    shipped = build_method("n3net", "sr")
    assert shipped.label == "vdsr-light" and shipped.paper == "VDSR" and shipped.shipped
    result = run_bench(resolve_dataset(str(tiny_gray)), [shipped, build_method("bicubic", "sr")],
                       BenchConfig(task="sr", settings=[2.0]))
    assert [s.shipped for s in result.summaries] == [True, False]
