"""The release step (benchmarks/release_weights.py), always on a temporary copy of the manifest."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import REPO, tiny_nlf_weights

RESULTS = {"n3net-nlf": ["n3net-Set12", "n3net-BSD68"], "n3net-raw": ["raw-Set12"],
           "vdsr-light": ["sr-Set5", "sr-Set14"], "n3net-color": ["real-PolyU-val", "n3net-color-CBSD68",
                                                                         "n3net-color-Kodak24"]}


@pytest.fixture(scope="module")
def release() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_weights", REPO / "benchmarks" / "release_weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shipped() -> dict[str, Any]:
    return json.loads((REPO / "weights" / "manifest.json").read_text())


def test_recording_the_bench_records_gives_the_shipped_figures(tmp_path: Path, release: ModuleType) -> None:
    """The figures in the manifest are exactly what the release step takes from results/*.json."""
    shipped = _shipped()
    blank = copy.deepcopy(shipped)
    for entry in blank["models"].values():
        entry["metrics"], entry["measured_with"] = {}, {}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(blank))
    for name, files in RESULTS.items():
        args = ["--name", name, "--manifest", str(manifest), "--results", *[str(REPO / "results" / f"{f}.json")
                                                                            for f in files]]
        assert release.main(args) == 0
    assert json.loads(manifest.read_text()) == shipped
    assert (REPO / "weights" / "manifest.json").read_text() == json.dumps(shipped, indent=2, sort_keys=True) + "\n"


def test_register_a_weights_file(tmp_path: Path, release: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    folder = tmp_path / "weights"
    folder.mkdir()
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"default": {}, "models": {}}))
    made = tiny_nlf_weights(tmp_path / "run", "tiny")
    assert release.main([str(made), "--default", "--manifest", str(manifest)]) == 0
    assert "registered tiny" in capsys.readouterr().out
    reg = json.loads(manifest.read_text())
    entry = reg["models"]["tiny"]
    assert (folder / "tiny.safetensors").read_bytes() == made.read_bytes()  # copied beside the manifest
    assert entry["sha256"] == hashlib.sha256(made.read_bytes()).hexdigest()
    assert entry["task"] == "denoise" and entry["arch"] == "n3net-light"
    assert entry["planes"] == ["image", "sqrt_a", "sqrt_b"]
    assert reg["default"] == {"denoise": "tiny"} and entry["metrics"] == {}

    # figures from a bench record (the command from --command), kept while the file is the same
    rec = {"dataset": "Set12", "task": "denoise", "method": "tiny", "sigma": 25, "psnr": 20.12345, "ssim": 0.512345,
           "full_set": True}
    results = tmp_path / "r.json"
    others = [{**rec, "method": "bm3d", "psnr": 1.0}, {**rec, "sigma": 50, "full_set": False}]
    results.write_text(json.dumps([rec, *others]))
    args = ["--name", "tiny", "--results", str(results), "--command", "n3 bench X", "--manifest", str(manifest)]
    assert release.main(args) == 0
    entry = json.loads(manifest.read_text())["models"]["tiny"]
    assert entry["metrics"] == {"Set12/sigma25": {"psnr": 20.12345, "ssim": 0.5123}}
    assert entry["measured_with"] == {"Set12": "n3 bench X"}
    assert release.main([str(folder / "tiny.safetensors"), "--manifest", str(manifest)]) == 0
    assert json.loads(manifest.read_text())["models"]["tiny"]["metrics"] == entry["metrics"]

    # another file under the same name: refused without --force, and its old figures are dropped
    other = tiny_nlf_weights(tmp_path / "run2", "tiny", seed=1)
    assert release.main([str(other), "--manifest", str(manifest)]) == 2
    assert "other contents" in capsys.readouterr().err
    assert release.main([str(other), "--force", "--manifest", str(manifest)]) == 0
    entry = json.loads(manifest.read_text())["models"]["tiny"]
    assert entry["metrics"] == {} and "measured_with" not in entry
    assert entry["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()


def test_records_without_the_model_or_command_are_refused(tmp_path: Path, release: ModuleType,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.json"
    shutil.copyfile(REPO / "weights" / "manifest.json", manifest)
    results = tmp_path / "r.json"
    results.write_text(json.dumps([{"dataset": "Set12", "task": "denoise", "method": "bm3d", "sigma": 25,
                                    "psnr": 1.0, "ssim": 0.1, "full_set": True}]))
    assert release.main(["--name", "n3net-nlf", "--results", str(results), "--manifest", str(manifest)]) == 2
    assert "no full-set denoise records of method n3net-nlf or n3net" in capsys.readouterr().err
    results.write_text(json.dumps([{"dataset": "Set12", "task": "denoise", "method": "n3net", "sigma": 25,
                                    "psnr": 1.0, "ssim": 0.1, "full_set": True}]))
    assert release.main(["--name", "n3net-nlf", "--results", str(results), "--manifest", str(manifest)]) == 2
    assert "give --command" in capsys.readouterr().err
    assert manifest.read_bytes() == (REPO / "weights" / "manifest.json").read_bytes()  # nothing written


def test_a_colour_model_is_the_default_for_colour_images(tmp_path: Path, release: ModuleType) -> None:
    """A colour model registered with --default serves colour images (``denoise-color``), beside the gray default;
    its real-pair figures are recorded under ``DATASET/real``."""
    from .conftest import tiny_color_weights

    folder = tmp_path / "weights"
    folder.mkdir()
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"default": {"denoise": "gray"}, "models": {}}))
    made = tiny_color_weights(tmp_path / "run", "tiny-color")
    assert release.main([str(made), "--default", "--manifest", str(manifest)]) == 0
    reg = json.loads(manifest.read_text())
    assert reg["default"] == {"denoise": "gray", "denoise-color": "tiny-color"}
    assert reg["models"]["tiny-color"]["planes"] == ["red", "green", "blue", "sqrt_a", "sqrt_b", "known"]
    records = [{"dataset": "PolyU-val", "task": "real", "method": "tiny-color", "setting": "real", "psnr": 38.12345,
                "ssim": 0.9512345, "full_set": True},
               {"dataset": "CBSD68", "task": "denoise", "method": "tiny-color", "sigma": 25, "psnr": 30.5,
                "ssim": 0.87, "full_set": True}]
    results = tmp_path / "r.json"
    results.write_text(json.dumps(records))
    args = ["--name", "tiny-color", "--results", str(results), "--command", "n3 bench Y", "--manifest", str(manifest)]
    assert release.main(args) == 0
    metrics = json.loads(manifest.read_text())["models"]["tiny-color"]["metrics"]
    assert metrics == {"PolyU-val/real": {"psnr": 38.12345, "ssim": 0.9512}, "CBSD68/sigma25": {"psnr": 30.5,
                                                                                               "ssim": 0.87}}
