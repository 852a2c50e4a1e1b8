"""n3 denoise as a user meets it: outputs, reports, and every kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from n3cli.cli.app import app
from n3cli.imaging.io import read_image

from ..conftest import tiny_nlf_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained noise-level-conditional model (enough to exercise the tool)."""
    return tiny_nlf_weights(tmp_path_factory.mktemp("w"), "tiny-test", seed=0)


def _img(path: Path, shape: tuple[int, ...] = (40, 48), dtype: type = np.uint8) -> Path:
    rng = np.random.default_rng(0)
    hi = 65535 if dtype == np.uint16 else 255
    arr = rng.integers(0, hi, shape).astype(dtype)
    if dtype == np.uint16:
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(arr))
    else:
        Image.fromarray(arr).save(path)
    return path


def run(*args: str) -> object:
    return runner.invoke(app, [str(a) for a in args])


def _assert_clean_failure(result: object, pattern: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert pattern.lower() in result.output.lower(), result.output


def test_denoise_writes_output_beside_input(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "a.png")
    result = run("denoise", src, "--sigma", "25", "--weights", weights)
    assert result.exit_code == 0, result.output
    out = tmp_path / "a_n3.png"
    assert out.exists() and read_image(out).pixels.shape == (40, 48, 1)


def test_json_reference_and_auto_sigma(tmp_path: Path, weights: Path) -> None:
    src, ref = _img(tmp_path / "a.png"), _img(tmp_path / "ref.png")
    result = run("denoise", src, "-o", tmp_path / "o.png", "--reference", ref, "--json", "--weights", weights)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(record) >= {"input", "output", "sigma", "psnr_in", "psnr_out", "ssim_out", "seconds"}
    assert record["color"] == "gray" and len(record["sigma"]) == 1 and record["sigma"][0] > 0  # estimated
    assert record["psnr_in"] == pytest.approx(float("inf")) or record["psnr_in"] > 0


def test_rgba_16bit_keeps_alpha_and_depth(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "c.png", (20, 30, 4), np.uint16)
    result = run("denoise", src, "--sigma", "10", "--weights", weights, "-o", tmp_path / "c_out.png")
    assert result.exit_code == 0, result.output
    a, b = read_image(src), read_image(tmp_path / "c_out.png")
    assert b.bit_depth == 16 and b.pixels.shape == (20, 30, 3)
    np.testing.assert_array_equal(a.alpha, b.alpha)


def test_folder_input_and_one_bad_file(tmp_path: Path, weights: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _img(src / "1.png")
    _img(src / "2.png")
    (src / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run("denoise", src, "-o", tmp_path / "out", "--sigma", "15", "--weights", weights)
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1_n3.png", "2_n3.png"]
    assert "3.png" in result.output


def test_a_second_run_on_a_folder_leaves_the_first_runs_outputs_out(tmp_path: Path, weights: Path) -> None:
    """Outputs written beside their inputs are not inputs of the next run on that folder (no photo_n3_n3.png);
    named as files they are."""
    _img(tmp_path / "1.png")
    _img(tmp_path / "2_n3.png")  # no 2.png beside it: an input like any other
    assert run("denoise", tmp_path, "--sigma", "15", "--weights", weights, "-q").exit_code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["1.png", "1_n3.png", "2_n3.png", "2_n3_n3.png"]
    again = run("denoise", tmp_path, "--sigma", "15", "--weights", weights, "--force")
    assert again.exit_code == 0, again.output
    assert "left out 2 earlier outputs" in again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert run("denoise", tmp_path / "1_n3.png", "--sigma", "15", "--weights", weights).exit_code == 0
    assert (tmp_path / "1_n3_n3.png").exists()
    _img(tmp_path / "1_n3.bmp")  # not the output of 1.png (that is a PNG): an input
    assert run("denoise", tmp_path, "--sigma", "15", "--weights", weights, "-q", "--force").exit_code == 0
    assert (tmp_path / "1_n3_n3.bmp").exists()


def test_a_run_that_writes_nothing_leaves_no_new_output_folder(tmp_path: Path, weights: Path) -> None:
    tiny = _img(tmp_path / "tiny.png", (4, 4))  # refused after the folder was planned: under 8x8
    for inputs in ([tmp_path / "m1.png", tmp_path / "m2.png"], [tmp_path / "m1.png", tiny]):
        result = run("denoise", *inputs, "--sigma", "15", "--weights", weights, "-o", tmp_path / "new")
        assert result.exit_code == 2, result.output
        assert not (tmp_path / "new").exists()


def test_json_has_a_record_for_each_failed_input(tmp_path: Path, weights: Path) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    result = run("denoise", tmp_path / "zero.png", tmp_path / "missing.png", "--weights", weights, "--json",
                 "--sigma", "5", "-o", tmp_path / "out")
    assert result.exit_code == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(r["input"]).name, "error" in r) for r in records] == [("missing.png", True), ("zero.png", True)]
    assert "empty file" in records[1]["error"]


def test_a_reference_of_another_kind_leaves_no_output(tmp_path: Path, weights: Path) -> None:
    """Found only when scoring, after the output was written: the output goes again (no output without its
    record)."""
    src, ref = _img(tmp_path / "a.png"), _img(tmp_path / "ref.png", (40, 48, 3))
    result = run("denoise", src, "--sigma", "15", "--weights", weights, "--reference", ref, "--json")
    assert result.exit_code == 2 and "reference is 48x40 colour" in result.output
    assert not (tmp_path / "a_n3.png").exists()
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == [str(src)]


def test_debug_shows_the_traceback_of_a_failed_input(tmp_path: Path, weights: Path) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    result = run("denoise", tmp_path / "zero.png", "--weights", weights, "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.output and "empty file" in result.output


def test_tiled_matches_whole(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "big.png", (150, 170))
    assert run("denoise", src, "-o", tmp_path / "w.png", "--sigma", "20", "--weights", weights,
               "--tile", "1024").exit_code == 0
    assert run("denoise", src, "-o", tmp_path / "t.png", "--sigma", "20", "--weights", weights,
               "--tile", "96", "--tile-overlap", "40").exit_code == 0
    diff = np.abs(read_image(tmp_path / "w.png").pixels - read_image(tmp_path / "t.png").pixels)
    assert diff.mean() < 0.5 / 255


@pytest.mark.parametrize("args,pattern", [
    (["missing.png", "--sigma", "25"], "no such file"),
    (["{img}", "--sigma", "-5"], "non-negative"),
    (["{img}", "--sigma", "abc"], "must be a number"),
    (["{img}", "--weights", "nope-model"], "unknown weights"),
    (["{img}", "-o", "{img}", "--force"], "output is the input"),
    (["{img}", "-o", "{file}/x.png"], "does not exist"),
    (["{img}", "--nlf", "1,2,3"], "--nlf"),
    (["{img}", "-o", "{dir}/out.xyz"], "unknown output format"),
])
def test_bad_arguments(tmp_path: Path, weights: Path, args: list[str], pattern: str) -> None:
    img = _img(tmp_path / "img.png")
    (tmp_path / "afile").write_text("x")
    mapping = {"{img}": str(img), "{file}": str(tmp_path / "afile"), "{dir}": str(tmp_path)}
    full = [a for a in args]
    full = [mapping.get(a, a) for a in full]
    full = [a.replace("{file}", str(tmp_path / "afile")).replace("{dir}", str(tmp_path)) for a in full]
    if "--weights" not in full:
        full += ["--weights", str(weights)]
    before = set(os.listdir(tmp_path))
    _assert_clean_failure(run("denoise", *full), pattern)
    assert set(os.listdir(tmp_path)) == before  # nothing created, no temporary leftovers


@pytest.mark.parametrize("content,pattern", [
    (b"hello, I am text", "not"),  # a text file named .png
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "png"),  # truncated
])
def test_bad_images(tmp_path: Path, weights: Path, content: bytes, pattern: str) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    _assert_clean_failure(run("denoise", bad, "--sigma", "5", "--weights", weights), pattern)
    assert not (tmp_path / "bad_n3.png").exists()


def test_empty_folder(tmp_path: Path, weights: Path) -> None:
    (tmp_path / "empty").mkdir()
    _assert_clean_failure(run("denoise", tmp_path / "empty", "--weights", weights), "no images")


def test_existing_output_needs_force(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "a.png")
    out = tmp_path / "a_n3.png"
    out.write_bytes(b"keep me")
    _assert_clean_failure(run("denoise", src, "--sigma", "5", "--weights", weights), "--force")
    assert out.read_bytes() == b"keep me"
    assert run("denoise", src, "--sigma", "5", "--weights", weights, "--force").exit_code == 0
    assert out.read_bytes() != b"keep me"


def test_refused_outputs_fail_before_the_model_loads(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "a.png")
    (tmp_path / "a_n3.png").write_bytes(b"keep me")
    for args in ([src], [tmp_path / "missing.png"], [src, "-o", tmp_path / "a.xyz"]):
        result = run("denoise", *args, "--sigma", "5", "--weights", weights)
        _assert_clean_failure(result, "error:")
        assert "model " not in result.output, result.output


def test_unwritable_folder(tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _img(tmp_path / "a.png")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    (tmp_path / "ro").mkdir()
    _assert_clean_failure(run("denoise", src, "-o", tmp_path / "ro" / "x.png", "--weights", weights), "not writable")


def test_decompression_bomb_guard(tmp_path: Path, weights: Path) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    result = run("denoise", bomb, "--sigma", "5", "--weights", weights)
    _assert_clean_failure(result, "--allow-large")


def test_debug_shows_traceback(tmp_path: Path, weights: Path) -> None:
    result = run("denoise", tmp_path / "missing.png", "--weights", weights, "--debug")
    assert result.exit_code != 0 and result.exception is not None


def test_help_has_examples() -> None:
    assert "n3 denoise photo.png" in run("denoise", "--help").output
    root = run("--help").output
    assert "denoise" in root and "n3 denoise photo.png -o clean.png" in root


def test_warns_when_noise_is_beyond_training(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "a.png")
    result = run("denoise", src, "--sigma", "120", "--weights", weights, "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    assert "sigma 120.0 is above the sigma <= 75" in result.output
    assert (tmp_path / "out.png").exists()  # a warning, not a refusal
    quiet = run("denoise", src, "--sigma", "50", "--weights", weights, "-o", tmp_path / "out2.png")
    assert quiet.exit_code == 0 and "warning" not in quiet.output.lower(), quiet.output
    strong = run("denoise", src, "--nlf", "0.2,0.01", "--weights", weights, "-o", tmp_path / "out3.png")
    assert strong.exit_code == 0 and "the NLF's noise (sigma 84.6 at mid-grey)" in strong.output, strong.output


def test_color_modes_on_an_rgb_image(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "c.png", (40, 48, 3))
    auto = run("denoise", src, "--weights", weights, "--json", "-o", tmp_path / "auto.png")
    assert auto.exit_code == 0, auto.output
    rec = json.loads(auto.stdout.strip().splitlines()[-1])
    assert rec["color"] == "opponent" and len(rec["sigma"]) == 3  # estimated per opponent channel
    rgb = run("denoise", src, "--sigma", "25", "--color", "rgb", "--weights", weights, "--json",
              "-o", tmp_path / "rgb.png")
    assert rgb.exit_code == 0, rgb.output
    rec = json.loads(rgb.stdout.strip().splitlines()[-1])
    assert rec["color"] == "rgb" and rec["sigma"] == [25.0, 25.0, 25.0]
    assert not np.array_equal(read_image(tmp_path / "auto.png").pixels, read_image(tmp_path / "rgb.png").pixels)
    shown = run("denoise", src, "--weights", weights, "-o", tmp_path / "shown.png")
    assert "(luma/red-blue/green-magenta)" in shown.output, shown.output
    gray = run("denoise", _img(tmp_path / "g.png"), "--sigma", "25", "--weights", weights, "--json",
               "-o", tmp_path / "g_out.png")
    assert json.loads(gray.stdout.strip().splitlines()[-1])["color"] == "gray"


def test_color_mode_errors(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "c.png", (40, 48, 3))
    _assert_clean_failure(run("denoise", src, "--color", "lab", "--weights", weights), "--color must be one of")
    _assert_clean_failure(run("denoise", src, "--color", "opponent", "--nlf", "1e-3,1e-5", "--weights", weights),
                          "not an NLF")
    assert not (tmp_path / "c_n3.png").exists()


def test_opponent_noise_range_warning_is_per_channel(tmp_path: Path, weights: Path) -> None:
    src = _img(tmp_path / "c.png", (40, 48, 3))
    ok = run("denoise", src, "--sigma", "100", "--weights", weights, "-o", tmp_path / "a.png")
    assert ok.exit_code == 0 and "warning" not in ok.output.lower(), ok.output  # channels see <= 71
    srgb = run("denoise", src, "--sigma", "100", "--color", "rgb", "--weights", weights, "-o", tmp_path / "b.png")
    assert "sigma 100.0 is above" in srgb.output, srgb.output
