"""Model configurations: retired keys of stored files load, unknown ones are refused (no silently ignored setting)."""

from __future__ import annotations

import pytest

from n3cli.nn.nets import NetConfig, build


def test_retired_keys_of_stored_configs_are_dropped() -> None:
    cfg = NetConfig.from_dict({"arch": "dncnn", "n_blocks": 1, "depth": 3, "block": "vdsr", "extra": {}})
    assert cfg.arch == "dncnn" and not hasattr(cfg, "block")
    assert build(cfg).config.depth == 3


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown model config keys"):
        NetConfig.from_dict({"arch": "dncnn", "blocks": 2})
    with pytest.raises(TypeError):
        NetConfig(block="vdsr")  # type: ignore[call-arg]
