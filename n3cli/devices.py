"""Device and thread choice (library level: the API and every subcommand use it)."""

from __future__ import annotations

import ctypes
import functools
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


# mallopt(3) parameters of glibc (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_kept = False


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the process's next tensors instead of returning it to the system.

    By default every block above malloc's mmap threshold (at most 32 MB; one 64-channel activation of a 1024² image
    is 256 MB) is mapped fresh and unmapped when freed, so the output of every layer is page-faulted and zeroed by
    the kernel anew: a fifth of an inference forward pass at 1024² (docs/speed.md). With mmap off (large blocks come
    from the heap) and the heap never trimmed, freed blocks are reused. (With a trim threshold, even mallopt's
    largest, 2 GB, the tiles of a large image gave their freed memory back and faulted it in again: docs/speed.md.)
    The price: the process keeps up to its peak (plus fragmentation) until it ends. Process-wide, so the ``n3``
    command turns it on and the library leaves it to the caller; ``N3_MALLOC=system`` in the environment keeps malloc's
    defaults. A no-op (False) off glibc."""
    global _kept
    if _kept:
        return True
    if os.environ.get("N3_MALLOC", "").strip().lower() == "system":
        return False
    libc = _glibc()
    if libc is None:
        return False
    # Trim threshold -1: never trim (mallopt(3)). The pad: the heap grows by 64 MB more than asked (fewer brk calls).
    # A freed block is still not reused for a block of exactly its size (posix_memalign asks for a little more);
    # smaller ones and merged neighbours reuse it.
    _kept = all(libc.mallopt(param, value) for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1),
                                                                (_M_TOP_PAD, 64 << 20)))
    return _kept


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def kept_free_bytes() -> int:
    """Bytes that this process's malloc holds free for reuse (glibc >= 2.33), else 0: memory the process can use
    although the system does not count it as available."""
    if not _kept:
        return 0
    libc = _glibc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return 0
    fn.restype = _Mallinfo2
    return int(fn().fordblks)
