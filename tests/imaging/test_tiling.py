"""Tiled application: tile planning, exact blending for receptive-field-limited functions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from n3cli.imaging.tiling import axis_starts, axis_weights, plan_tiles, tiled_apply


def box_blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 box blur with zero padding: receptive radius 2."""
    c = x.shape[1]
    return F.conv2d(x, torch.full((c, 1, 5, 5), 1 / 25, dtype=x.dtype), padding=2, groups=c)


def test_plan_tiles_cover_and_stay_inside() -> None:
    for h, w, tile, overlap in [(37, 501, 64, 16), (100, 100, 32, 8), (33, 33, 32, 8), (1, 1, 8, 2)]:
        boxes = plan_tiles(h, w, tile, overlap)
        cover = torch.zeros(h, w)
        for b in boxes:
            assert 0 <= b.y0 < b.y1 <= h and 0 <= b.x0 < b.x1 <= w
            assert (b.y1 - b.y0, b.x1 - b.x0) == (min(tile, h), min(tile, w))
            cover[b.slices] += 1
        assert cover.min() >= 1
    starts = axis_starts(501, 64, 16)
    assert starts[0] == 0 and starts[-1] == 501 - 64
    assert all(a + 64 - b >= 16 for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError):
        plan_tiles(10, 10, 8, 8)


def test_weights_sum_to_one_across_bands() -> None:
    starts = axis_starts(100, 32, 12)
    ws = axis_weights(starts, 32, 3, dtype=torch.float64)
    total = torch.zeros(100, dtype=torch.float64)
    for s, wt in zip(starts, ws, strict=True):
        total[s:s + 32] += wt
        assert wt.min() >= 0 and wt.max() <= 1
    torch.testing.assert_close(total, torch.ones_like(total))


@pytest.mark.parametrize("h,w,tile,overlap,margin", [
    (37, 501, 32, 8, None),  # default margin overlap // 4 = 2 = the blur's radius
    (37, 501, 16, 5, 2),  # overlap = receptive field 5, margin = radius
    (64, 64, 20, 12, 5),
])
def test_tiled_equals_whole_for_limited_receptive_field(h: int, w: int, tile: int, overlap: int,
                                                        margin: int | None) -> None:
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    calls: list[tuple[int, int]] = []
    out = tiled_apply(box_blur, x, tile, overlap, progress=lambda d, t: calls.append((d, t)), margin=margin)
    torch.testing.assert_close(out, box_blur(x), rtol=0, atol=1e-6)
    n = len(plan_tiles(h, w, tile, overlap))
    assert n > 1 and calls == [(i + 1, n) for i in range(n)]


def test_channel_changing_fn_and_float32() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.rand(1, 3, 45, 70)
    with torch.no_grad():
        out = tiled_apply(conv, x, 24, 8)
        torch.testing.assert_close(out, conv(x), rtol=0, atol=1e-6)
    assert out.shape == (1, 5, 45, 70)


def test_small_images_run_once() -> None:
    calls: list[tuple[int, int]] = []
    seen: list[tuple[int, ...]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return t * 2

    for shape in [(1, 1, 1, 1), (1, 3, 30, 17)]:
        x = torch.rand(shape)
        out = tiled_apply(fn, x, 32, 8, progress=lambda d, t: calls.append((d, t)))
        torch.testing.assert_close(out, x * 2)
    assert seen == [(1, 1, 1, 1), (1, 3, 30, 17)] and calls == [(1, 1), (1, 1)]


def test_smooth_blend_of_a_tile_dependent_fn() -> None:
    # fn adds a different constant per tile: the blend must ramp smoothly, without jumps.
    counter = iter(range(1000))
    x = torch.zeros(1, 1, 8, 200, dtype=torch.float64)
    out = tiled_apply(lambda t: t + next(counter), x, 64, 32)
    row = out[0, 0, 4]
    assert row.diff().abs().max() < 0.15  # a hard seam would jump by 1


def test_bad_arguments() -> None:
    x = torch.rand(1, 1, 50, 50)
    with pytest.raises(ValueError):
        tiled_apply(box_blur, x, 16, 8, margin=4)
    with pytest.raises(ValueError):
        tiled_apply(lambda t: t[..., 1:, :], x, 16, 4)
    with pytest.raises(ValueError):
        tiled_apply(box_blur, x[0], 16, 4)


def test_rectangular_tiles_cover_exactly() -> None:
    import numpy as np

    assert plan_tiles(70, 45, np.int64(40), 8) == plan_tiles(70, 45, (40, 40), 8)  # any integer type
    x = torch.rand(1, 2, 70, 45)
    boxes = plan_tiles(70, 45, (40, 20), 8)
    assert {(b.y1 - b.y0, b.x1 - b.x0) for b in boxes} == {(40, 20)}
    torch.testing.assert_close(tiled_apply(box_blur, x, (40, 20), 8, margin=2), box_blur(x))


def _covered(h: int, w: int, tile: tuple[int, int] | int, overlap: int) -> int:
    return sum((b.y1 - b.y0) * (b.x1 - b.x0) for b in plan_tiles(h, w, tile, overlap))


def test_automatic_tiles_fit_the_budget_and_waste_less_than_squares() -> None:
    """Auto tiles (api.even_tile): at most max_side² pixels, sides ≤ MAX_TILE, the whole overlap kept, and never more
    pixels covered than by the best evenly spread square tile."""
    import random

    from n3cli.api import MAX_TILE, even_tile

    assert even_tile(300, 200, 1584, 96) == (300, 200)  # fits: one tile
    assert even_tile(19, 9000, 1584, 96)[0] == 194  # sides cut to the image keep the overlap whole
    assert _covered(2048, 2048, even_tile(2048, 2048, 1584, 96), 96) <= 1.06 * 2048 * 2048
    assert _covered(4000, 6000, even_tile(4000, 6000, 1584, 96), 96) <= 1.11 * 4000 * 6000
    rng = random.Random(0)
    for _ in range(100):
        h, w = rng.randint(1, 9000), rng.randint(1, 9000)
        max_side, overlap = rng.choice([(1584, 96), (912, 96), (512, 32), (300, 96)])
        th, tw = even_tile(h, w, max_side, overlap)
        assert min(th, h) * min(tw, w) <= max_side ** 2 and max(th, tw) <= MAX_TILE
        assert min(th, tw) >= 2 * overlap + 2
        squares = [s for s in range(2 * overlap + 2, max_side + 1) if s * s <= max_side ** 2]
        best_square = min(_covered(h, w, s, overlap) for s in squares[-40:] + squares[:: max(len(squares) // 40, 1)])
        assert _covered(h, w, (th, tw), overlap) <= best_square
