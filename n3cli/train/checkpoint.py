"""Resumable training state: written atomically, read back without arbitrary pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import write_atomic
from ..errors import N3Error


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors, numbers, strings, containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise N3Error(f"checkpoint not found: {path}") from None
    except Exception as exc:  # corrupt file or unsafe content
        raise N3Error(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
