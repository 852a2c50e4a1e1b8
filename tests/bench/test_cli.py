"""`n3 bench` on the command line: outputs and exit codes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from n3cli.cli.app import app
from n3cli.cli.bench import split_values

runner = CliRunner()


def test_bench_json_markdown_and_images(tiny_gray: Path, tmp_path: Path) -> None:
    js, md, cmp = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "cmp"
    res = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--sigma", "10,20", "--methods", "noisy",
                              "--methods", "wavelet", "--json", str(js), "--markdown", str(md),
                              "--save-images", str(cmp), "--quiet"])
    assert res.exit_code == 0, res.output
    records = json.loads(js.read_text())
    assert [(r["sigma"], r["method"]) for r in records] == [(10, "noisy"), (10, "wavelet"), (20, "noisy"),
                                                            (20, "wavelet")]
    lines = md.read_text().splitlines()
    assert lines[0].startswith("<!-- ") and "bench" in lines[0] and "--sigma" in lines[0]
    assert len(lines) == 3 + 4
    assert len(list(cmp.rglob("*.png"))) == 2 * 2 * 2  # 2 sigmas x 2 images x (strip + zoom)
    assert "wavelet" in res.output and "sigma=10" in res.output
    again = ["bench", "--dataset", str(tiny_gray), "--sigma", "10", "--methods", "noisy", "--quiet"]
    for extra, name in ((["--markdown", str(md)], "r.md"), (["--save-images", str(cmp)], "cmp")):
        res = runner.invoke(app, [*again, *extra])
        assert res.exit_code == 2 and name in res.output and "--force" in res.output, res.output
    assert runner.invoke(app, [*again, "--save-images", str(cmp), "--markdown", str(md), "--force"]).exit_code == 0


def test_sigma_forms() -> None:
    assert split_values(["25,50", "70"]) == ["25", "50", "70"]


def test_exit_codes(tiny_gray: Path, tmp_path: Path) -> None:
    cases = [
        (["--dataset", "NoSuchSet"], "unknown dataset"),
        (["--dataset", str(tiny_gray), "--methods", "foo"], "unknown method 'foo'"),
        (["--dataset", "Set12", "--data-dir", str(tmp_path)], "n3 data download Set12"),
        (["--dataset", str(tiny_gray), "--task", "raw", "--sigma", "25"], "do not apply to --task raw"),
        (["--dataset", str(tiny_gray), "--task", "raw", "--nlf", "1e-3"], "--nlf must be two numbers"),
        (["--dataset", str(tiny_gray), "--sigma", "abc"], "--sigma takes numbers"),
        (["--dataset", str(tiny_gray), "--task", "sr", "--scale", "1.5"], "integers >= 2"),
        (["--dataset", str(tiny_gray), "--methods", "official", "--official-dir", str(tmp_path)], "no method can run"),
    ]
    for args, message in cases:
        res = runner.invoke(app, ["bench", *args, "--quiet"])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)


def test_color_mode_of_model_methods(tiny_rgb: Path, tmp_path: Path) -> None:
    from ..conftest import tiny_nlf_weights

    w = tiny_nlf_weights(tmp_path, "tinyc")
    js = tmp_path / "c.json"
    res = runner.invoke(app, ["bench", "--dataset", str(tiny_rgb), "--sigma", "20", "--methods", f"weights:{w}",
                              "--color", "rgb", "--json", str(js), "--quiet"])
    assert res.exit_code == 0, res.output
    assert [r["method"] for r in json.loads(js.read_text())] == ["tinyc-rgb"]
    res = runner.invoke(app, ["bench", "--dataset", str(tiny_rgb), "--sigma", "20", "--methods", f"weights:{w}",
                              "--json", str(js), "--quiet"])
    assert res.exit_code == 2 and "already exists (use --force" in res.output  # before any work
    assert json.loads(js.read_text())[0]["method"] == "tinyc-rgb"
    res = runner.invoke(app, ["bench", "--dataset", str(tiny_rgb), "--sigma", "20", "--methods", f"weights:{w}",
                              "--json", str(js), "--quiet", "--force"])
    assert res.exit_code == 0, res.output
    rec = json.loads(js.read_text())[0]
    assert rec["method"] == "tinyc"
    for args, message in [(["--color", "lab"], "--color must be one of"),
                          (["--color", "rgb", "--update-manifest"], "release_weights.py")]:
        res = runner.invoke(app, ["bench", "--dataset", str(tiny_rgb), "--methods", f"weights:{w}", *args, "--quiet"])
        assert res.exit_code == 2 and message in res.output, (args, res.output)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir())}


def test_bench_writes_nothing_into_the_weights_folder(tiny_gray: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped default runs (method n3net) and its figures go to --json only: the registry folder is
    untouched (root may write into read-only folders, so mtimes and names are compared)."""
    from ..conftest import shipped_tiny_default

    folder = shipped_tiny_default(tmp_path / "weights", monkeypatch)
    before = _snapshot(folder)
    folder.chmod(0o555)
    try:
        js = tmp_path / "r.json"
        res = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--sigma", "20", "--methods", "n3net",
                                  "--json", str(js), "--quiet"])
        assert res.exit_code == 0, res.output
        assert [(r["method"], r["full_set"]) for r in json.loads(js.read_text())] == [("n3net", True)]
        res = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--methods", "n3net", "--update-manifest"])
        assert res.exit_code == 2 and "--update-manifest was removed" in res.output
        assert "benchmarks/release_weights.py" in res.output
    finally:
        folder.chmod(0o755)
    assert _snapshot(folder) == before


def test_official_dir_from_option_env_or_beside(tiny_gray: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from n3cli.bench import methods

    monkeypatch.delenv(methods.ENV_OFFICIAL, raising=False)
    work = tmp_path / "checkout" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert methods.default_official_dir() is None  # no ../shared/reference/n3net-official here
    res = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--methods", "official", "--quiet"])
    assert res.exit_code == 2 and "no folder of the authors'" in res.output
    assert "(pass --official-dir DIR or set $N3_OFFICIAL_DIR)" in res.output
    (tmp_path / "checkout" / "shared" / "reference" / "n3net-official").mkdir(parents=True)
    assert methods.default_official_dir() == Path("..") / "shared" / "reference" / "n3net-official"
    monkeypatch.setenv(methods.ENV_OFFICIAL, str(tmp_path / "env"))
    assert methods.default_official_dir() == tmp_path / "env"
    res = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--methods", "official", "--quiet"])
    assert res.exit_code == 2 and f"no n3net_sigma{{25,50,70}}.t7 in {tmp_path / 'env'}" in res.output
    help_text = " ".join(runner.invoke(app, ["bench", "--help"]).output.split())
    assert "N3_OFFICIAL_DIR" in help_text
    assert "n3net-official, relative to the current folder, if it exists" in help_text


def test_progress_lines_in_logs(tiny_gray: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal: the shared progress display prints plain lines for the whole run (here at once)."""
    monkeypatch.setattr("n3cli.cli.progress.PLAIN_EVERY_S", 0.0)
    res = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--sigma", "10,20", "--methods", "noisy"])
    assert res.exit_code == 0, res.output
    assert "progress: bench tiny 25%" in res.output and "progress: bench tiny 75%" in res.output
    quiet = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--sigma", "10", "--methods", "noisy", "-q"])
    assert "progress:" not in quiet.output


def test_a_one_sigma_model_at_another_sigma_is_noted_once_without_a_python_warning(tiny_gray: Path,
                                                                                  tmp_path: Path) -> None:
    from n3cli.nn.nets import n3net_light
    from n3cli.weights import ModelInfo, save_weights

    w = save_weights(tmp_path / "one.safetensors", n3net_light(depth=3, features=8, embed_features=8).eval(),
                     ModelInfo(name="one", planes=["image"], sigma=25.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.invoke(app, ["bench", "--dataset", str(tiny_gray), "--sigma", "15", "--methods", f"weights:{w}"])
    assert res.exit_code == 0, res.output
    assert not [c for c in caught if issubclass(c.category, UserWarning)], [str(c.message) for c in caught]
    assert res.output.count("one was trained for sigma 25") == 1, res.output
