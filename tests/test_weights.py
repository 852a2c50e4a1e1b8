"""Weights: safetensors round trip with config and info, safe loading, the authors' checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from n3cli.imaging.noise import add_gaussian, generator, seed_for
from n3cli.nn.nets import n3net_light, noise_planes
from n3cli.weights import ModelInfo, WeightsError, import_official, load_weights, resolve, save_weights

from .conftest import DATA, OFFICIAL, need


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model = n3net_light(in_channels=3, depth=3, features=8).eval()
    info = ModelInfo(name="tiny", planes=["image", "sqrt_a", "sqrt_b"], metrics={"x": 1.0})
    path = save_weights(tmp_path / "m.safetensors", model, info)
    loaded, info2 = load_weights(path)
    assert info2.name == "tiny" and info2.conditional and info2.metrics == {"x": 1.0}
    x = torch.rand(1, 1, 24, 24)
    assert loaded.conditional and not model.conditional  # the file's planes make the loaded model build them
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x, (1e-3, 1e-4)), model(torch.cat([x, noise_planes((1e-3, 1e-4), x)], 1)))
    with pytest.raises(WeightsError, match="exists"):
        save_weights(path, model, info)


def test_bad_weights_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a valid"):
        load_weights(junk)
    with pytest.raises(WeightsError, match="unknown weights"):
        resolve("no-such-model")
    pickle_bomb = tmp_path / "evil.pt"
    torch.save({"net": {"x": object()}}, pickle_bomb)  # arbitrary objects must not be unpickled
    with pytest.raises(WeightsError):
        import_official(pickle_bomb)


def test_official_checkpoint_reproduces_stored_psnr() -> None:
    """Two Set12 images at sigma 25 through our code; figures stored when this test was written."""
    ckpt = need(OFFICIAL / "n3net_sigma25.t7")
    set12 = need(DATA / "Set12")
    model, info = import_official(ckpt)
    assert info.sigma == 25 and model.config.update == "logits"
    psnrs = []
    for name in ("05.png", "08.png"):
        clean = torch.from_numpy(np.asarray(Image.open(set12 / name), dtype=np.float32) / 255.0)[None, None]
        noisy = add_gaussian(clean, 25, generator(seed_for("Set12", name, 25)))
        with torch.inference_mode():
            out = model(noisy)
        psnrs.append(10 * np.log10(1.0 / float((out - clean).square().mean())))
    assert psnrs == pytest.approx(STORED_SET12_SIGMA25, abs=0.02)


STORED_SET12_SIGMA25 = [30.4176, 32.5911]  # measured with this code (the paper: 30.55 mean on Set12)


def test_shipped_weights_found_in_an_installed_layout(tmp_path: Path) -> None:
    """A wheel installs weights/ as the data package n3cli.weights_data (see pyproject): mimic that layout."""
    import shutil
    import subprocess
    import sys

    from .conftest import REPO

    site = tmp_path / "site"
    shutil.copytree(REPO / "n3cli", site / "n3cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "weights", site / "n3cli" / "weights_data")
    code = "import n3cli.weights as w; print(w.weights_dir()); print(sorted(w.manifest()['models']))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": ""})
    folder, names = out.stdout.splitlines()
    assert Path(folder) == site / "n3cli" / "weights_data"
    assert names == str(sorted(json.loads((REPO / "weights" / "manifest.json").read_text())["models"]))


def test_untrained_noise_note_only_for_conditional_models_beyond_training() -> None:
    from n3cli import api

    cond = ModelInfo("c", planes=["image", "sqrt_a", "sqrt_b"])
    assert api.untrained_noise_note(cond, 75.0) is None and api.untrained_noise_note(cond) is None
    assert "sigma 76.0 is above" in (api.untrained_noise_note(cond, 76.0) or "")
    assert api.untrained_noise_note(cond, nlf=(0.1, 0.01)) is None  # the largest raw NLF of training
    assert "NLF" in (api.untrained_noise_note(cond, nlf=(0.0, (80 / 255) ** 2)) or "")
    assert api.untrained_noise_note(ModelInfo("fixed", sigma=25.0), 120.0) is None  # per-σ: its own note


def test_library_denoise_warns_beyond_training(tmp_path: Path) -> None:
    from n3cli import api

    from .conftest import tiny_nlf_weights

    path = tiny_nlf_weights(tmp_path, "tiny-warn", seed=0)
    img = np.full((24, 24), 0.5, np.float32)
    with pytest.warns(UserWarning, match="above the sigma <= 75"):
        api.denoise(img, 100.0, model=path, device="cpu")


def test_weights_list_shows_the_measured_psnr() -> None:
    from typer.testing import CliRunner

    from n3cli.cli.app import app
    from n3cli.weights import manifest

    result = CliRunner().invoke(app, ["weights", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name, entry in manifest()["models"].items():
        assert name in result.output
        for key, metric in entry.get("metrics", {}).items():
            assert f"{key} {metric['psnr']:.2f} dB" in result.output


def _record_figures(folder: str, worker: int, count: int, start: Any) -> None:
    import n3cli.weights as w

    w.weights_dir = lambda: Path(folder)  # type: ignore[assignment]  # this child process only
    start.wait()  # all writers begin together
    for i in range(count):
        w.record_metrics("denoise", {f"Set{worker}/sigma{i}": {"psnr": float(i), "ssim": 0.5}}, f"bench {worker}")


def test_concurrent_manifest_writers_keep_every_figure(tmp_path: Path) -> None:
    import multiprocessing

    (tmp_path / "manifest.json").write_text(json.dumps(
        {"default": {"denoise": "m"}, "models": {"m": {"file": "m.safetensors", "task": "denoise", "metrics": {}}}}))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    workers = [ctx.Process(target=_record_figures, args=(str(tmp_path), k, 40, start)) for k in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"]["m"]
    assert len(entry["metrics"]) == 4 * 40
    assert entry["measured_with"] == {f"Set{k}": f"bench {k}" for k in range(4)}
