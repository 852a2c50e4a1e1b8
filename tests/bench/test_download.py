"""`n3 data download` against a local HTTP server (127.0.0.1 only): install, verify, refuse bad archives."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from n3cli.bench import datasets
from n3cli.bench.datasets import DatasetError, DatasetSpec
from n3cli.bench.download import download, safe_parts
from n3cli.cli.app import app

IMAGES = {"a.png": b"\x89PNG fake image a", "b.png": b"\x89PNG fake image b"}
SUMS = {k: hashlib.sha256(v).hexdigest() for k, v in IMAGES.items()}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder served) of an HTTP server on 127.0.0.1 at a free port."""
    folder = tmp_path / "www"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    finally:
        httpd.shutdown()
        httpd.server_close()


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _good_members() -> dict[str, bytes]:
    members = {f"Tiny-main/testsets/Tiny/{k}": v for k, v in IMAGES.items()}
    members["Tiny-main/README.md"] = b"readme"
    members["Tiny-main/other/a.png"] = b"not this one"
    return members


def _spec(url: str, sums: dict[str, str] = SUMS) -> DatasetSpec:
    return DatasetSpec("Tiny", ("denoise",), False, 2, url=url, member_dir="testsets/Tiny",
                       source="test archive", sha256=sums)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, server: tuple[str, Path]) -> tuple[str, Path]:
    """A registry entry 'Tiny' pointing at the local server's tiny.zip."""
    url, folder = server
    _zip(folder / "tiny.zip", _good_members())
    monkeypatch.setitem(datasets.REGISTRY, "Tiny", _spec(f"{url}/tiny.zip"))
    return url, folder


def test_download_installs_and_verifies(tiny: tuple[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder, fetched = download("Tiny", root)
    assert fetched and folder == root / "Tiny"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == IMAGES
    assert sorted(p.name for p in root.iterdir()) == ["Tiny"]  # no staging left behind
    assert download("Tiny", root) == (folder, False)  # present and valid: nothing fetched
    assert datasets.resolve_dataset("Tiny", root).spec is datasets.REGISTRY["Tiny"]


def test_checksum_mismatch_installs_nothing(tiny: tuple[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = tiny
    monkeypatch.setitem(datasets.REGISTRY, "Tiny", _spec(f"{url}/tiny.zip", {**SUMS, "b.png": "0" * 64}))
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="checksum mismatch for Tiny/b.png"):
        download("Tiny", root)
    assert list(root.iterdir()) == []


def test_path_traversal_refused(server: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = server
    _zip(folder / "evil.zip", {**_good_members(), "../evil.png": b"x", "Tiny-main/testsets/Tiny/../../x.png": b"y"})
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="outside the archive"):
        download("Tiny", root, spec=_spec(f"{url}/evil.zip"))
    assert list(root.iterdir()) == [] and not (tmp_path / "evil.png").exists()
    with pytest.raises(DatasetError, match="absolute path"):
        safe_parts("/etc/passwd")
    assert safe_parts("./a//b/c.png") == ("a", "b", "c.png")


def test_tar_archive_and_link_refused(server: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = server

    def tar(path: Path, link: bool) -> None:
        with tarfile.open(path, "w:gz") as tf:
            for name, data in _good_members().items():
                if link and name.endswith("b.png"):
                    info = tarfile.TarInfo(name)
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tf.addfile(info)
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))

    tar(folder / "ok.tar.gz", link=False)
    tar(folder / "link.tar.gz", link=True)
    installed, _ = download("Tiny", tmp_path / "r1", spec=_spec(f"{url}/ok.tar.gz"))
    assert sorted(p.name for p in installed.iterdir()) == ["a.png", "b.png"]
    with pytest.raises(DatasetError, match="link or special file"):
        download("Tiny", tmp_path / "r2", spec=_spec(f"{url}/link.tar.gz"))
    assert list((tmp_path / "r2").iterdir()) == []


def test_http_error_and_no_url(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DatasetError, match="HTTP 404"):
        download("Tiny", tmp_path, spec=_spec(f"{url}/missing.zip"))
    with pytest.raises(DatasetError, match="no download URL is known for Urban100"):
        download("Urban100", tmp_path)
    with pytest.raises(DatasetError, match="only http and https"):
        download("Tiny", tmp_path, spec=_spec("file:///etc/passwd"))


def test_cli_download_and_list(tiny: tuple[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "root"
    res = runner.invoke(app, ["data", "download", "Tiny", "--data-dir", str(root)])
    assert res.exit_code == 0, res.output
    assert "downloaded and verified" in res.output and (root / "Tiny" / "a.png").exists()
    res = runner.invoke(app, ["data", "list", "--data-dir", str(root)])
    assert res.exit_code == 0 and "Tiny" in res.output and "no URL" in res.output and "(from --data-dir)" in res.output
    (root / "Tiny" / "a.png").write_bytes(b"changed")
    res = runner.invoke(app, ["data", "download", "Tiny", "--data-dir", str(root)])
    assert res.exit_code == 2 and "does not match Tiny's checksums (use --force to replace it)" in res.output
    res = runner.invoke(app, ["data", "download", "Nope", "--data-dir", str(root)])
    assert res.exit_code == 2 and "unknown dataset 'Nope'" in res.output
