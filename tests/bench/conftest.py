"""Helpers of the benchmark tests: tiny synthetic image folders and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from n3cli.imaging.io import write_image

DATA = Path(os.environ.get("N3_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def textured(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """A smooth random image with some edges, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * x + rng.uniform(0, 3)) * np.cos(5 * y)
    img = np.stack([base + 0.1 * (x > 0.5) * k for k in range(c)], axis=2)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)


@pytest.fixture
def tiny_gray(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    for i in range(2):
        write_image(folder / f"im{i}.png", textured(40, 48, 1, i))
    return folder


@pytest.fixture
def tiny_rgb(tmp_path: Path) -> Path:
    folder = tmp_path / "tinyrgb"
    folder.mkdir()
    for i in range(2):
        write_image(folder / f"c{i}.png", textured(36, 42, 3, 10 + i))
    return folder


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their data root explicitly."""
    monkeypatch.delenv("N3_DATA", raising=False)
