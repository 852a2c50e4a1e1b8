"""Precision: what auto means per device, refusals, and the bfloat16 default of CPUs with native bf16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from n3cli import api
from n3cli.engine import native_bf16, resolve_precision
from n3cli.errors import N3Error

from .conftest import tiny_nlf_weights

CPU = torch.device("cpu")


def test_resolve_precision() -> None:
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU, cpu_auto="bf16") == ("bf16" if native_bf16(CPU) else "fp32")
    with pytest.raises(N3Error, match="CUDA only"):
        resolve_precision("fp16", CPU)
    with pytest.raises(N3Error, match="unknown precision"):
        resolve_precision("fp8", CPU)
    if not native_bf16(CPU):
        with pytest.raises(N3Error, match="no native bfloat16"):
            resolve_precision("bf16", CPU)


@pytest.mark.skipif(not native_bf16(CPU), reason="this CPU has no native bfloat16")
def test_cpu_default_is_bf16_where_native_and_close_to_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "CPU_AUTO_PRECISION", "bf16")  # the shipped default (conftest pins fp32 elsewhere)
    weights = tiny_nlf_weights(tmp_path, "tiny-bf16", seed=1)
    auto = api.load_model(weights, device="cpu")
    exact = api.load_model(weights, device="cpu", precision="fp32")
    assert auto.precision == "bf16" and exact.precision == "fp32" and "(bf16)" in auto.describe()
    img = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    a, b = api.denoise(img, 20, model=auto), api.denoise(img, 20, model=exact)
    assert np.isfinite(a).all() and not np.array_equal(a, b)
    assert float(np.abs(a - b).max()) < 0.05  # the N3 math stays float32; only the convolutions round
