"""Shared pieces of the training tests: a tiny model and a fast run configuration."""

from __future__ import annotations

from pathlib import Path

from n3cli.train.config import TrainConfig

#: A 3-layer, 8-feature N3Net: trains a step in well under a second on the CPU.
TINY = {"depth": 3, "features": 8, "embed_features": 8}


def tiny_config(out: Path, data: Path, **kw: object) -> TrainConfig:
    """A run of the tiny model on ``data`` (validated on it too) writing to ``out``: 32-pixel crops, batch 2,
    a log line every step; ``kw`` overrides any field."""
    base = dict(out=str(out), data=[str(data)], val=str(data), val_limit=1, steps=4, batch_size=2, patch=32,
                eval_every=2, log_every=1, model=TINY, checkpoint_minutes=100.0)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]
