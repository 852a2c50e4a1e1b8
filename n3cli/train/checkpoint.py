"""Resumable training state: written atomically, read back without arbitrary pickle."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import N3Error


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors, numbers, strings, containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise N3Error(f"checkpoint not found: {path}") from None
    except Exception as exc:  # corrupt file or unsafe content
        raise N3Error(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
