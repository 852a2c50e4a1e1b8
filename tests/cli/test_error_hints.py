"""Library errors speak of values; the CLI names the flag that lifts them (n3cli.cli.common.FLAG_HINTS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from n3cli.cli.app import app
from n3cli.cli.common import FLAG_HINTS, error_line
from n3cli.errors import ImageExistsError, N3Error, TooLargeError
from n3cli.weights import NoDefaultWeightsError, TrainingCheckpointError, WeightsExistError

runner = CliRunner()


@pytest.mark.parametrize(("error", "flag"), [
    (TooLargeError("a.png: over the limit"), "--allow-large"),
    (ImageExistsError("o.png: already exists"), "--force"),
    (WeightsExistError("w.safetensors exists"), "--force"),
    (NoDefaultWeightsError("no shipped weights for task 'sr' yet"), "--weights FILE"),
    (TrainingCheckpointError("last.pt is a training checkpoint"), "n3 weights export"),
])
def test_error_line_adds_the_flag(error: N3Error, flag: str) -> None:
    line = error_line(error)
    assert line.startswith(str(error) + " (") and flag in line and "--" not in str(error)


def test_plain_errors_are_unchanged() -> None:
    assert error_line(N3Error("bad value\nmore")) == "bad value"
    assert error_line(ValueError("x")) == "x"
    assert set(FLAG_HINTS) >= {"max_pixels", "overwrite", "weights", "data_dir"}


def test_weights_import_and_removed_ship(tmp_path: Path) -> None:
    from .. import conftest

    w = conftest.tiny_nlf_weights(tmp_path, "tiny")
    ckpt = tmp_path / "n3net_sigma25.pt"
    import torch

    torch.save({"net": {"blocks.0.conv1.weight": torch.zeros(64, 1, 3, 3)}}, ckpt)
    res = runner.invoke(app, ["weights", "import", str(ckpt), "-o", str(w)])
    assert res.exit_code == 2 and "already exists (use --force" in res.output  # the output is checked first
    res = runner.invoke(app, ["weights", "import", str(ckpt), "-o", str(tmp_path / "new.safetensors")])
    assert res.exit_code == 2 and "unexpected checkpoint layout" in res.output
    assert not (tmp_path / "new.safetensors").exists()
    res = runner.invoke(app, ["weights", "export", str(ckpt), "-o", str(tmp_path / "x.safetensors"),
                              "--name", "x", "--ship"])
    assert res.exit_code == 2 and "release_weights.py" in res.output and not (tmp_path / "x.safetensors").exists()


def test_missing_set_names_data_dir(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "--dataset", "Set12", "--data-dir", str(tmp_path), "--quiet"])
    assert res.exit_code == 2 and "n3 data download Set12" in res.output and "(--data-dir DIR)" in res.output


def test_existing_image_output_names_force(tmp_path: Path) -> None:
    """The library refuses an existing output without naming a flag; the CLI's line names --force."""
    import n3cli.imaging.io as io

    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(src)
    with pytest.raises(ImageExistsError) as err:
        io.write_image(src, np.zeros((16, 16), np.float32))
    assert "--force" not in str(err.value) and "--force" in error_line(err.value)
