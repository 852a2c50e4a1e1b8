"""Self-ensemble (``--ensemble``): the average over the 8 flips/rotations, through the API, CLI and bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from n3cli import api
from n3cli.bench.methods import MethodOptions, build_method
from n3cli.cli.app import app
from n3cli.imaging.io import read_image

from .conftest import tiny_nlf_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_nlf_weights(tmp_path_factory.mktemp("w"), "tiny-test", seed=3)


NOISE = torch.tensor([[1e-3, 1e-4]])


def _input(h: int = 40, w: int = 48) -> torch.Tensor:
    return torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(1))


def test_ensemble_is_equivariant_and_not_a_single_pass(weights: Path) -> None:
    """E(g·x) = g·E(x) for every symmetry g of the square holds for any network only if each output is
    mapped back with the right inverse; a single pass of this (untrained, asymmetric) net is not."""
    plain = api.load_model(weights, "denoise", "cpu")
    ens = api.load_model(weights, "denoise", "cpu", self_ensemble=True)
    x = _input()
    ex = api.run(ens, x, noise=NOISE)
    assert not torch.allclose(ex, api.run(plain, x, noise=NOISE), atol=1e-4)
    for flip, turns in api.DIHEDRAL:
        gx = api._transform(x, flip, turns)
        torch.testing.assert_close(api.run(ens, gx, noise=NOISE), api._transform(ex, flip, turns), atol=2e-5, rtol=0)
        single = api._transform(api.run(plain, x, noise=NOISE), flip, turns)
        assert not torch.allclose(api.run(plain, gx, noise=NOISE), single, atol=1e-4) or (flip, turns) == (False, 0)


def test_ensemble_progress_counts_all_passes(weights: Path) -> None:
    ens = api.load_model(weights, "denoise", "cpu", self_ensemble=True)
    seen: list[tuple[float, int]] = []
    api.run(ens, _input(64, 64), tile=32, overlap=8, progress=lambda i, n: seen.append((i, n)), noise=NOISE)
    totals = {n for _, n in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1] == totals.pop()
    assert [i for i, _ in seen] == sorted(i for i, _ in seen)
    assert seen[-1][1] % 8 == 0 and seen[-1][1] >= 16  # 8 passes over at least 2 tiles


def test_cli_and_bench(tmp_path: Path, weights: Path) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48)).astype(np.uint8)).save(src)
    runner = CliRunner()
    one = runner.invoke(app, ["denoise", str(src), "--sigma", "25", "--weights", str(weights),
                              "-o", str(tmp_path / "one.png")])
    eight = runner.invoke(app, ["denoise", str(src), "--sigma", "25", "--weights", str(weights), "--ensemble",
                                "-o", str(tmp_path / "eight.png")])
    assert one.exit_code == 0 and eight.exit_code == 0, eight.output
    assert "self-ensemble" in eight.output and "self-ensemble" not in one.output
    assert not np.array_equal(read_image(tmp_path / "one.png").pixels, read_image(tmp_path / "eight.png").pixels)
    method = build_method(f"weights:{weights}", "denoise", MethodOptions(device="cpu", ensemble=True))
    assert method.label == "tiny-test-x8"
    refused = runner.invoke(app, ["bench", "--dataset", str(tmp_path), "--ensemble", "--update-manifest"])
    assert refused.exit_code == 2 and "--update-manifest was removed" in refused.output
    assert "Traceback" not in refused.output
