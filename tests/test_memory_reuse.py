"""keep_freed_memory: large freed blocks are reused instead of mapped fresh (docs/speed.md)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc only")

PROBE = """
import resource, sys, torch
from n3cli.devices import keep_freed_memory, kept_free_bytes
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.ones(64 << 20)  # 256 MB, above any mmap threshold of malloc's
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(48 << 20)  # 192 MB
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
del x
print(int(kept), faults, kept_free_bytes())
"""


def _small_pages() -> bool:
    """Page faults count 4 KB pages unless transparent huge pages are always on (then a fault may map 2 MB)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            return "[always]" not in fh.read()
    except OSError:
        return True


def _probe(mode: str, **env: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def test_freed_tensors_are_reused_without_page_faults() -> None:
    kept, faults, free = _probe("keep")
    assert kept == 1
    assert faults < 1000  # the next tensor (192 MB) reuses the first one's pages
    assert free >= 256 << 20  # and the freed block counts as memory the process can use
    kept, faults, free = _probe("default")
    assert kept == 0 and free == 0
    # by default it is mapped and zeroed page by page again (49,152 pages of 4 KB)
    assert faults > 30000 or not _small_pages()


def test_malloc_defaults_kept_on_request() -> None:
    kept, faults, _ = _probe("keep", N3_MALLOC="system")
    assert kept == 0 and (faults > 30000 or not _small_pages())
