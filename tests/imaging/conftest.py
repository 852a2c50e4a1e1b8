"""Shared helpers of the imaging tests: where the read-only benchmark data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("N3_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


@pytest.fixture
def set5() -> Path:
    folder = DATA / "Set5"
    if not folder.is_dir() or not any(folder.glob("*.png")):
        pytest.skip(f"benchmark data not found: {folder}")
    return folder
