"""Loading PyTorch files from untrusted sources: tensors and plain containers only, one-line errors."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import N3Error

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def load_tensors(path: str | Path, error: type[N3Error] = N3Error) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: a file holding any other Python object (which
    unpickling could run as code) is refused. Every failure is an ``error`` with a one-line message."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{p}: is a folder; give a file in it (a run's checkpoint is FOLDER/last.pt)")
    if not p.is_file():
        raise error(f"{p}: no such file")
    with open(p, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip, or a plain pickle
        raise error(f"{p}: not a PyTorch checkpoint (a .pt / .pth / .t7 file written by torch.save)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise error(f"{p}: refused: it holds Python objects other than tensors, and loading those could run "
                    "code") from None
    except Exception as exc:  # corrupt or not a PyTorch file at all
        text = _ANSI.sub("", str(exc)).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise error(f"{p}: not a readable PyTorch file ({reason})") from None
