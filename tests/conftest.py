"""Shared test fixtures: tiny tensors, and the shared data folder beside the repository (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("N3_SHARED", REPO.parent / "shared"))
DATA = Path(os.environ.get("N3_DATA", SHARED / "data"))
OFFICIAL = SHARED / "reference" / "n3net-official"


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
