"""trim_to_step: the run log keeps the records a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path

from n3cli.train.runlog import trim_to_step


def test_keeps_records_up_to_the_step(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    records = [{"step": s, "loss": 0.1} for s in (10, 20, 30)] + [{"step": 20, "val_psnr": 30.0}, {"note": "x"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert trim_to_step(log, 20) == 1
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        records[0], records[1], records[3], records[4]]


def test_untouched_when_nothing_is_past_the_step(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    text = '{"step": 1}\n{"step": 2}\n'
    log.write_text(text)
    assert trim_to_step(log, 2) == 0 and log.read_text() == text
    assert trim_to_step(tmp_path / "missing.jsonl", 5) == 0
