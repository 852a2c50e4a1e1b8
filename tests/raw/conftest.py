"""Shared fixtures of the raw tests: the real camera raw beside the repository (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from n3cli.raw.io import RawImage, read_raw

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BLACKMAGIC = SHARED / "raw" / "Blackmagic.dng"


@pytest.fixture(scope="session")
def blackmagic_path() -> Path:
    if not BLACKMAGIC.is_file():
        pytest.skip(f"{BLACKMAGIC} not available")
    return BLACKMAGIC


@pytest.fixture(scope="session")
def blackmagic(blackmagic_path: Path) -> RawImage:
    return read_raw(blackmagic_path)
