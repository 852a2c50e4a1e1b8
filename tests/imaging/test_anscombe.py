"""The generalised Anscombe transform: variance stabilisation and the unbiased closed-form inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n3cli.imaging.anscombe import D_MIN, gat, gat_inverse
from n3cli.imaging.noise import add_poisson_gaussian, generator


@pytest.mark.parametrize("a,b", [(1e-3, 1e-5), (1e-2, 1e-4)])
def test_stabilises_and_inverts_without_bias(a: float, b: float) -> None:
    for level in (0.02, 0.1, 0.5, 0.9):
        clean = torch.full((100_000,), level, dtype=torch.float64)
        z = add_poisson_gaussian(clean, a, b, generator(1), clip=False).numpy()
        d = gat(z, a, b)
        assert d.std() == pytest.approx(1.0, abs=0.05)
        # the exact unbiased inverse maps the mean of the transformed data back to the signal
        assert float(gat_inverse(d.mean(), a, b)) == pytest.approx(level, rel=0.02, abs=5e-4)


def test_inverse_is_monotone_and_non_negative() -> None:
    d = np.linspace(0.0, 40.0, 4001)
    inv = gat_inverse(d, 1e-2, 1e-4)
    assert np.all(inv >= 0) and np.all(np.diff(inv) >= 0)
    assert 0.8 < D_MIN < 0.9
    with pytest.raises(ValueError, match="a > 0"):
        gat(np.zeros(3), 0.0, 1e-4)
