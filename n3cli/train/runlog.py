"""The run log (``log.jsonl``): one JSON record per line, each carrying the training ``step`` it belongs to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic

_CUT_SHORT = object()  # a line that is not valid JSON (cut short by a kill)


def _lines(path: Path) -> Iterator[tuple[str, Any]]:
    """Each non-empty line of the log with its parsed value (``_CUT_SHORT`` where it is not valid JSON)."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            yield line, json.loads(line)
        except json.JSONDecodeError:
            yield line, _CUT_SHORT


def records(path: Path) -> list[dict[str, Any]]:
    """The log's records (a missing log has none; lines that are not JSON records are left out)."""
    return [record for _, record in _lines(path) if isinstance(record, dict)]


def trim_to_step(path: Path, step: int) -> int:
    """Keep only the records of ``path`` at or before ``step``; returns how many were dropped.

    A run killed between checkpoints has logged steps its checkpoint does not hold. Resuming replays
    those steps, so their first records must go, or the log would show each of them twice. A line cut
    short by the kill (not valid JSON) goes too. The file is replaced atomically.
    """
    kept: list[str] = []
    dropped = 0
    for line, record in _lines(path):
        if record is _CUT_SHORT or (isinstance(record, dict) and isinstance(record.get("step"), int)
                                    and record["step"] > step):
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return dropped
