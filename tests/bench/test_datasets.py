"""The test-set registry: data root resolution, lookup, missing-data messages, checksums."""

from __future__ import annotations

from pathlib import Path

import pytest

from n3cli.bench import datasets
from n3cli.bench.datasets import DatasetError, DatasetMissingError, data_root, resolve_dataset
from n3cli.imaging.io import write_image

from .conftest import textured


def test_data_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "default_cache_root", lambda: tmp_path / "cache")
    assert data_root(None) == (tmp_path / "cache", "cache")
    monkeypatch.setenv("N3_DATA", str(tmp_path / "env"))
    assert data_root(None) == (tmp_path / "env", "N3_DATA")
    assert data_root(tmp_path / "cli") == (tmp_path / "cli", "data_dir")


def test_default_cache_root_is_per_user() -> None:
    from platformdirs import user_cache_dir

    assert datasets.default_cache_root() == Path(user_cache_dir("n3")) / "datasets"


def test_registry_entries_and_checksums() -> None:
    sums = datasets.checksums()
    assert set(sums) == {"Set12", "BSD68", "CBSD68", "Kodak24", "Set5", "Set14"}
    for name, spec in datasets.REGISTRY.items():
        assert spec.tasks and set(spec.tasks) <= {"denoise", "sr", "real"}
        assert spec.source
        if name in sums:
            assert len(sums[name]) == spec.count and spec.url
            assert all(len(h) == 64 for h in sums[name].values())
    assert datasets.REGISTRY["Urban100"].url is None and datasets.REGISTRY["BSD100"].url is None
    polyu = datasets.REGISTRY["PolyU-val"]
    assert polyu.tasks == ("real",) and polyu.paired and polyu.count == 22 and polyu.url is None
    assert datasets.lookup("set12") is datasets.REGISTRY["Set12"]
    assert datasets.REGISTRY["Urban100"].gray_for_denoise and not datasets.REGISTRY["CBSD68"].gray_for_denoise


def _fake_set12(root: Path) -> Path:
    folder = root / "Set12"
    folder.mkdir(parents=True)
    for name in datasets.REGISTRY["Set12"].checksums:
        write_image(folder / name, textured(8, 8, 1, 0))
    return folder


def test_resolve_registered_name_under_each_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_set12(tmp_path / "a")
    ds = resolve_dataset("Set12", tmp_path / "a")
    assert ds.spec is datasets.REGISTRY["Set12"] and ds.folder == folder and len(ds.files) == 12
    monkeypatch.setenv("N3_DATA", str(tmp_path / "a"))
    assert resolve_dataset("set12").folder == folder
    with pytest.raises(DatasetError):  # --data-dir wins over N3_DATA
        resolve_dataset("Set12", tmp_path / "b")


def test_missing_data_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        resolve_dataset("BSD68", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "n3 data download BSD68" in msg and "data root that holds BSD68/" in msg
    assert str(tmp_path) in msg and "--" not in msg  # the library speaks of values; the CLI adds --data-dir
    assert isinstance(err.value, DatasetMissingError) and err.value.about == "data_dir"
    with pytest.raises(DatasetError, match="no download URL"):
        resolve_dataset("Urban100", tmp_path)


def test_folder_path_and_unknown(tiny_gray: Path, tmp_path: Path) -> None:
    ds = resolve_dataset(str(tiny_gray))
    assert ds.name == "tiny" and ds.spec is None and [f.name for f in ds.files] == ["im0.png", "im1.png"]
    copy = _fake_set12(tmp_path / "copy")
    assert resolve_dataset(str(copy)).spec is datasets.REGISTRY["Set12"]  # a full copy counts as the set
    with pytest.raises(DatasetError, match="unknown dataset 'Nope'"):
        resolve_dataset("Nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        resolve_dataset(str(tmp_path / "empty"))
