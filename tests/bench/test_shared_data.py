"""On the real test sets (skipped when ../shared/data is absent): noisy and wavelet on 2 Set12 images."""

from __future__ import annotations

import pytest

from n3cli.bench.datasets import resolve_dataset
from n3cli.bench.methods import build_methods
from n3cli.bench.run import BenchConfig, run_bench

from .conftest import DATA

pytestmark = pytest.mark.data


def test_set12_noisy_and_wavelet() -> None:
    if not (DATA / "Set12").is_dir():
        pytest.skip(f"benchmark data not found: {DATA / 'Set12'}")
    ds = resolve_dataset("Set12", DATA)
    methods, missing = build_methods(["noisy", "wavelet"], "denoise")
    assert not missing and ds.complete
    res = run_bench(ds, methods, BenchConfig("denoise", [25.0], limit=2))
    noisy, wavelet = res.summaries
    assert noisy.images == 2 and abs(noisy.psnr - 20.17) < 0.1  # 20·log10(255/25) = 20.17 dB
    assert wavelet.psnr > noisy.psnr + 4 and 0 < noisy.ssim < wavelet.ssim < 1
    assert not noisy.full_set and noisy.paper_psnr is None and wavelet.paper_psnr is None
