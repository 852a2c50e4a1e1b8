"""Resumable training state: written atomically, read back without arbitrary pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import write_atomic
from ..errors import N3Error
from ..safeload import load_tensors


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors, numbers, strings, containers only)."""
    blob = load_tensors(path)
    if not isinstance(blob, dict):
        raise N3Error(f"{path}: not a training checkpoint of n3")
    return blob
