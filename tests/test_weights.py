"""Weights: safetensors round trip with config and info, safe loading, the authors' checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

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

    result = CliRunner().invoke(app, ["weights", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name, entry in manifest()["models"].items():
        assert name in result.output and entry["sha256"][:12] in result.output
        for key, metric in entry.get("metrics", {}).items():
            assert f"{key} {metric['psnr']:.2f} dB" in result.output
    sr_only = CliRunner().invoke(app, ["weights", "list", "--task", "sr"], env={"COLUMNS": "250"})
    assert "vdsr-light" in sr_only.output and "n3net-nlf" not in sr_only.output


# --- the registry -------------------------------------------------------------------------------

def test_this_worktree_s_weights_are_tested() -> None:
    from n3cli.weights import weights_dir

    from .conftest import REPO

    assert weights_dir().resolve() == (REPO / "weights").resolve()


def test_registry_api_matches_the_shipped_files() -> None:
    import dataclasses
    import hashlib

    from n3cli.weights import Weights, default_weights, get_weights, list_weights, manifest, weights_dir

    reg = manifest()
    assert [w.name for w in list_weights()] == list(reg["models"])
    assert [w.name for w in list_weights("sr")] == ["vdsr-light"]
    for w in list_weights():
        assert isinstance(w, Weights) and w.path.parent == weights_dir()
        assert w.sha256 == hashlib.sha256(w.path.read_bytes()).hexdigest()  # the files are the registered ones
        assert dict(w.metrics) == reg["models"][w.name]["metrics"]
    nlf = get_weights("n3net-nlf")
    assert nlf.task == "denoise" and nlf.arch == "n3net" and nlf.conditional and nlf.default_for == ("denoise",)
    assert nlf.training["steps"] == 75000 and "Set12" in nlf.measured_with
    with pytest.raises(TypeError):
        nlf.metrics["Set12/sigma25"]["psnr"] = 99.0  # type: ignore[index]  # read only
    with pytest.raises(dataclasses.FrozenInstanceError):
        nlf.name = "other"  # type: ignore[misc]  # frozen
    assert default_weights("raw").name == "n3net-raw" and default_weights("sr").name == "vdsr-light"
    with pytest.raises(WeightsError, match="no shipped weights named 'nope'.*n3net-nlf"):
        get_weights("nope")


def test_vdsr_light_loads_through_the_registry_with_its_metrics() -> None:
    from n3cli.weights import get_weights, manifest

    model, info = get_weights("vdsr-light").load()
    recorded = manifest()["models"]["vdsr-light"]["metrics"]["Set5/x2"]["psnr"]
    assert info.name == "vdsr-light" and info.metrics["Set5/x2"]["psnr"] == recorded == pytest.approx(36.7644, abs=1e-4)
    assert model.config.arch == "vdsr" and not model.training


def _registry_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights folder with a tiny registered model (the default denoiser), used as the shipped one."""
    import hashlib

    import n3cli.weights

    from .conftest import tiny_nlf_weights

    folder = tmp_path / "weights"
    path = tiny_nlf_weights(folder, "tiny-shipped")
    entry = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "task": "denoise",
             "arch": "n3net", "planes": ["image", "sqrt_a", "sqrt_b"], "metrics": {"Set12/sigma25": {"psnr": 1.0}}}
    (folder / "manifest.json").write_text(json.dumps({"default": {"denoise": "tiny-shipped"},
                                                      "models": {"tiny-shipped": entry}}))
    monkeypatch.setattr(n3cli.weights, "weights_dir", lambda: folder)
    return path


def test_hash_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _registry_copy(tmp_path, monkeypatch)
    model, info = resolve(None)
    assert info.name == "tiny-shipped" and info.metrics == {"Set12/sigma25": {"psnr": 1.0}}
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor: still a loadable file
    path.write_bytes(bytes(data))
    for weights in (None, "tiny-shipped"):
        with pytest.raises(WeightsError, match="tiny-shipped.*sha256.*registry says"):
            resolve(weights)
    load_weights(path)  # as a plain file it still loads: only the shipped name vouches for the hash

    from typer.testing import CliRunner

    from n3cli.cli.app import app

    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(img)
    res = CliRunner().invoke(app, ["denoise", str(img), "--sigma", "25", "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 2 and "sha256" in res.output and "Traceback" not in res.output


def test_an_entry_without_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _registry_copy(tmp_path, monkeypatch)
    reg = json.loads((tmp_path / "weights" / "manifest.json").read_text())
    del reg["models"]["tiny-shipped"]["sha256"]
    (tmp_path / "weights" / "manifest.json").write_text(json.dumps(reg))
    with pytest.raises(WeightsError, match="lacks its file or sha256"):
        resolve(None)


def _training_checkpoint(path: Path) -> Path:
    model = n3net_light(in_channels=1, depth=3, features=8)
    torch.save({"net_config": model.config.to_dict(), "model": model.state_dict(), "step": 3,
                "train_config": {"task": "denoise"}}, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_training_checkpoint_is_named_as_such(tmp_path: Path, suffix: str) -> None:
    from n3cli.weights import TrainingCheckpointError

    ckpt = _training_checkpoint(tmp_path / f"last{suffix}")
    with pytest.raises(TrainingCheckpointError, match="is a training checkpoint of n3 train; export it to a "
                       r"\.safetensors weights file first"):
        resolve(ckpt)


def test_training_checkpoint_on_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from n3cli.cli.app import app

    ckpt = _training_checkpoint(tmp_path / "last.pt")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(img)
    res = CliRunner().invoke(app, ["denoise", str(img), "--sigma", "25", "--weights", str(ckpt),
                                   "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 2 and "training checkpoint of n3 train" in res.output
    assert "n3 weights export" in res.output and "does not look like" not in res.output


def test_pt_files_are_looked_into(tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(WeightsError, match="neither an n3 weights file"):
        resolve(other)
    # the authors' layout under a .pt name goes to the importer (which finds the tensors do not fit)
    authors = tmp_path / "n3net_sigma25.pt"
    torch.save({"net": {"blocks.0.conv1.weight": torch.zeros(64, 1, 3, 3)}}, authors)
    with pytest.raises(WeightsError, match="unexpected checkpoint layout"):
        resolve(authors)


def test_official_pt_copy_loads_like_the_t7(tmp_path: Path) -> None:
    ckpt = need(OFFICIAL / "n3net_sigma25.t7")
    copy = tmp_path / "n3net_sigma25.pt"
    copy.write_bytes(ckpt.read_bytes())
    model, info = resolve(copy)
    assert info.sigma == 25 and model.config.update == "logits"


def test_import_of_a_renamed_checkpoint_needs_its_sigma(tmp_path: Path) -> None:
    """The noise level of an authors' checkpoint comes from its file name; renamed, it must be given."""
    import shutil

    from typer.testing import CliRunner

    from n3cli.cli.app import app

    renamed = tmp_path / "mine.t7"
    shutil.copy(need(OFFICIAL / "n3net_sigma25.t7"), renamed)
    out = tmp_path / "mine.safetensors"
    res = CliRunner().invoke(app, ["weights", "import", str(renamed), "-o", str(out)])
    assert res.exit_code == 2 and "give --sigma" in res.output and not out.exists()
    res = CliRunner().invoke(app, ["weights", "import", str(renamed), "-o", str(out), "--sigma", "25"])
    assert res.exit_code == 0 and "sigma 25)" in res.output
    assert load_weights(out)[1].sigma == 25


def test_weights_list_as_json() -> None:
    import json

    from typer.testing import CliRunner

    from n3cli.cli.app import app
    from n3cli.weights import manifest

    res = CliRunner().invoke(app, ["weights", "list", "--json", "--task", "sr"])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines()]
    shipped = {n for n, e in manifest()["models"].items() if e["task"] == "sr"}
    assert {r["name"] for r in records} == shipped
    vdsr = next(r for r in records if r["name"] == "vdsr-light")
    assert vdsr["default_for"] == ["sr"] and vdsr["metrics"]["Set5/x2"]["psnr"] == pytest.approx(36.7644, abs=1e-4)


def test_the_sigma_in_an_authors_file_name() -> None:
    from n3cli.weights import official_sigma

    assert official_sigma(Path("n3net_sigma25.t7")) == 25
    assert official_sigma(Path("n3net_sigma25_epoch10.t7")) == 25  # (the digits after it were once joined: 2510)
    assert official_sigma(Path("n3net_sigma12.5.t7")) == 12.5 and official_sigma(Path("mine.t7")) is None
    with pytest.raises(WeightsError, match="not a noise level"):
        official_sigma(Path("n3net_sigma999.t7"))


def test_a_sigma_given_against_the_file_name_is_refused(tmp_path: Path) -> None:
    import shutil

    ckpt = tmp_path / "n3net_sigma25.t7"
    shutil.copy(need(OFFICIAL / "n3net_sigma25.t7"), ckpt)
    with pytest.raises(WeightsError, match="says sigma 25, not 50"):
        import_official(ckpt, 50)
    assert import_official(ckpt, 25)[1].sigma == 25
