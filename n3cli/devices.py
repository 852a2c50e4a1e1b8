"""Device and thread choice (library level: the API and every subcommand use it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .errors import N3Error


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA, then MPS, then CPU. Asking for an unavailable device is an error."""
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise N3Error("device cuda: no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise N3Error("device mps: no MPS device is available")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise N3Error(f"unknown device {name!r}; expected auto, cpu, cuda or mps")
    return torch.device(name)


def set_threads(threads: int | None = None) -> None:
    """Use ``threads``, else $OMP_NUM_THREADS when set, else all cores, for intra-op parallelism on CPU."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            threads = int(env)
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads < 1:
        raise N3Error(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else the platform's), for recording with every timing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
