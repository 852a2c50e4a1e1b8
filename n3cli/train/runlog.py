"""The run log (``log.jsonl``): one JSON record per line, each carrying the training ``step`` it belongs to."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomic


def trim_to_step(path: Path, step: int) -> int:
    """Keep only the records of ``path`` at or before ``step``; returns how many were dropped.

    A run killed between checkpoints has logged steps its checkpoint does not hold. Resuming replays
    those steps, so their first records must go, or the log would show each of them twice. A line cut
    short by the kill (not valid JSON) goes too. The file is replaced atomically.
    """
    if not path.exists():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return dropped
