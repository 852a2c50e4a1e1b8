"""`sets_cmd` as a Typer command (registered by the app as `n3 sets`)."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from n3cli.cli.sets import sets_cmd


def test_sets_command_runs(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("sets")(sets_cmd)
    app.command("other")(lambda: None)  # two commands, so that "sets" is a subcommand as in n3
    result = CliRunner().invoke(app, ["sets", "--steps", "1", "--n", "32", "--batch", "1", "--test-sets", "2",
                                      "--val-every", "0", "--models", "n3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.json").exists() and (tmp_path / "cnnnet_n3.safetensors").exists()
    bad = CliRunner().invoke(app, ["sets", "--models", "resnet"])
    assert bad.exit_code != 0
