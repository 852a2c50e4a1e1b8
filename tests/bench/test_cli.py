"""`n3 bench` on the command line: outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert res.exit_code == 0, res.output
    rec = json.loads(js.read_text())[0]
    assert rec["method"] == "tinyc"
    for args, message in [(["--color", "lab"], "--color must be one of"),
                          (["--color", "rgb", "--update-manifest"], "release_weights.py")]:
        res = runner.invoke(app, ["bench", "--dataset", str(tiny_rgb), "--methods", f"weights:{w}", *args, "--quiet"])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
