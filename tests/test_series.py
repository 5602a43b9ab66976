"""Numeric helpers behind the charts, checked on hand-computed values and against numpy/scipy."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from core.analysis.series import align, band, downsample_indices, ema_smooth, robust_range


def _reference_ema(values: list[float], w: float) -> list[float]:
    """TensorBoard's classicSmoothing loop, transcribed (without its constant-series shortcut)."""
    last, n, out = 0.0, 0, []
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * w + (1 - w) * v
        n += 1
        debias = 1.0 if w == 1 else 1 - w**n
        out.append(last / debias)
    return out


# ---------------------------------------------------------------------- ema_smooth
def test_ema_hand_values() -> None:
    np.testing.assert_allclose(ema_smooth([1, 2, 3], 0.5), [1.0, 1.25 / 0.75, 2.125 / 0.875], rtol=1e-12)
    np.testing.assert_allclose(ema_smooth([1, 2, 3], 0.5), [1.0, 1.6667, 2.4286], atol=1e-4)


def test_ema_passes_non_finite_through_without_touching_the_state() -> None:
    out = ema_smooth([1.0, np.nan, 3.0, np.inf, -np.inf, 5.0], 0.5)
    assert out[0] == 1.0
    assert np.isnan(out[1]) and out[3] == np.inf and out[4] == -np.inf
    # second finite value: last = 0.5*0.5 + 0.5*3 = 1.75, debias 0.75
    assert out[2] == pytest.approx(1.75 / 0.75)
    # third finite value: last = 1.75*0.5 + 0.5*5 = 3.375, debias 0.875
    assert out[5] == pytest.approx(3.375 / 0.875)


def test_ema_weight_zero_returns_the_input_unchanged() -> None:
    values = np.array([3.0, np.nan, -1.0, np.inf, 2.5])
    out = ema_smooth(values, 0.0)
    np.testing.assert_array_equal(out, values)
    assert out is not values


def test_ema_matches_the_reference_loop() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=3000).cumsum()
    values[[5, 17, 1000]] = np.nan
    values[200] = np.inf
    for w in (0.3, 0.6, 0.9, 0.999):
        np.testing.assert_allclose(ema_smooth(values, w), _reference_ema(values.tolist(), w), rtol=1e-10,
                                   equal_nan=True)


def test_ema_constant_and_empty_series() -> None:
    np.testing.assert_array_equal(ema_smooth([2.0, 2.0, 2.0], 0.9), [2.0, 2.0, 2.0])
    assert ema_smooth([], 0.5).size == 0
    np.testing.assert_array_equal(ema_smooth([np.nan, np.nan], 0.5), [np.nan, np.nan])


@pytest.mark.parametrize("weight", [1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_ema_rejects_weights_outside_0_1(weight: object) -> None:
    with pytest.raises(ValueError, match="weight"):
        ema_smooth([1.0, 2.0], weight)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- downsample_indices
def test_downsample_keeps_extremes_non_finite_points_and_a_spike() -> None:
    n = 100_000
    rng = np.random.default_rng(0)
    x = np.arange(n)
    y = np.exp(-x / 30_000) + 0.01 * rng.random(n)
    nan_at = [10, 12_345, 54_321, 99_998]
    y[nan_at] = np.nan
    y[70_000] = np.inf
    y[80_000] = -np.inf
    y[33_333] = 50.0  # isolated spike: the global max
    y[66_666] = -3.0  # isolated dip: the global min
    idx = downsample_indices(x, y, max_points=2000)

    assert idx.dtype.kind == "i"
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    assert idx[0] == 0 and idx[-1] == n - 1
    kept = set(idx.tolist())
    assert {33_333, 66_666} <= kept
    for i in [*nan_at, 70_000, 80_000]:
        assert {i - 1, i, i + 1} <= kept
    non_finite_and_neighbours = 3 * (len(nan_at) + 2)
    assert len(idx) <= 2000 + non_finite_and_neighbours
    assert np.nanmax(y[idx][np.isfinite(y[idx])]) == 50.0
    assert np.nanmin(y[idx][np.isfinite(y[idx])]) == -3.0


def test_downsample_keeps_every_bucket_extreme() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=10_000)
    idx = downsample_indices(np.arange(y.size), y, max_points=400)
    assert len(idx) <= 400
    # 100 buckets of 100 points: each bucket's min and max survive.
    for start in range(0, y.size, 100):
        chunk = y[start:start + 100]
        assert start + int(np.argmin(chunk)) in idx
        assert start + int(np.argmax(chunk)) in idx


def test_downsample_short_input_returns_all_indices() -> None:
    np.testing.assert_array_equal(downsample_indices(np.arange(5), [1.0, np.nan, 3.0, 4.0, 5.0]), np.arange(5))
    assert downsample_indices([], []).size == 0


def test_downsample_length_bound_for_many_lengths() -> None:
    for n in (2001, 2003, 4099, 20_000, 123_457):
        y = np.sin(np.arange(n) / 7.0)
        idx = downsample_indices(np.arange(n), y, max_points=2000)
        assert len(idx) <= 2000
        assert idx[0] == 0 and idx[-1] == n - 1


def test_downsample_is_fast() -> None:
    rng = np.random.default_rng(0)
    data = [rng.normal(size=20_000).cumsum() for _ in range(50)]
    x = np.arange(20_000)
    start = time.perf_counter()
    for y in data:
        downsample_indices(x, y, max_points=2000)
    assert time.perf_counter() - start < 1.0


def test_downsample_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_points"):
        downsample_indices(np.arange(10), np.arange(10.0), max_points=3)
    with pytest.raises(ValueError, match="x"):
        downsample_indices(np.arange(9), np.arange(10.0))


# ---------------------------------------------------------------------- align
def test_align_interpolates_on_the_union_range() -> None:
    grid, matrix = align([(np.array([0, 1, 2]), np.array([0.0, 10.0, 20.0])),
                          (np.array([1, 3]), np.array([5.0, 25.0]))], n_grid=4)
    np.testing.assert_allclose(grid, [0, 1, 2, 3])
    np.testing.assert_allclose(matrix[0], [0, 10, 20, np.nan])
    np.testing.assert_allclose(matrix[1], [np.nan, 5, 15, 25])


def test_align_interpolates_between_points() -> None:
    runs_xy = [(np.array([0.0, 4.0]), np.array([0.0, 8.0])), (np.array([0.0, 2.0, 4.0]), np.array([1.0, 1.0, 5.0]))]
    # 3 distinct x values <= n_grid: the union is the grid
    grid, matrix = align(runs_xy, n_grid=5)
    np.testing.assert_allclose(grid, [0, 2, 4])
    np.testing.assert_allclose(matrix, [[0, 4, 8], [1, 1, 5]])
    # more distinct values than n_grid: an even grid over the union range
    x = np.arange(0.0, 9.0)
    grid, matrix = align([*runs_xy, (x, x)], n_grid=5)
    np.testing.assert_allclose(grid, [0, 2, 4, 6, 8])
    np.testing.assert_allclose(matrix, [[0, 4, 8, np.nan, np.nan], [1, 1, 5, np.nan, np.nan], [0, 2, 4, 6, 8]])
    grid, matrix = align([(np.array([0.0, 4.0]), np.array([0.0, 8.0])), (x, x)], n_grid=3)
    np.testing.assert_allclose(grid, [0, 4, 8])
    grid, matrix = align([(np.array([0.0, 4.0]), np.array([0.0, 8.0])), (x[:5], x[:5])], n_grid=4)
    np.testing.assert_allclose(grid, [0, 4 / 3, 8 / 3, 4])
    np.testing.assert_allclose(matrix[0], [0, 8 / 3, 16 / 3, 8])


def test_align_keeps_nan_gaps() -> None:
    grid, matrix = align([(np.arange(5.0), np.array([0.0, 1.0, np.nan, 3.0, 4.0])),
                          (np.arange(0.0, 4.5, 0.5), np.arange(0.0, 4.5, 0.5))], n_grid=9)
    np.testing.assert_allclose(grid, np.arange(0, 4.5, 0.5))
    row = matrix[0]
    np.testing.assert_allclose(row[[0, 1, 2, 6, 7, 8]], [0.0, 0.5, 1.0, 3.0, 3.5, 4.0])
    assert np.isnan(row[[3, 4, 5]]).all()  # 1.5, 2, 2.5: next to the NaN
    np.testing.assert_allclose(matrix[1], grid)


def test_align_uses_the_runs_x_values_when_few() -> None:
    x = np.array([3, 6, 9])
    grid, matrix = align([(x, np.array([1.0, 2.0, 3.0])), (x, np.array([3.0, 4.0, 5.0]))], n_grid=500)
    np.testing.assert_array_equal(grid, x)
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [3, 4, 5]])


def test_align_sorts_and_handles_empty_runs() -> None:
    grid, matrix = align([(np.array([4.0, 0.0]), np.array([8.0, 0.0])), (np.array([]), np.array([])),
                          (np.array([2.0, 2.0, np.nan]), np.array([1.0, 7.0, 3.0]))], n_grid=3)
    np.testing.assert_allclose(grid, [0, 2, 4])
    np.testing.assert_allclose(matrix[0], [0, 4, 8])
    assert np.isnan(matrix[1]).all()
    np.testing.assert_allclose(matrix[2], [np.nan, 1.0, np.nan])  # repeated x keeps the first, NaN x dropped
    grid, matrix = align([(np.array([]), np.array([]))])
    assert grid.size == 0 and matrix.shape == (1, 0)
    with pytest.raises(ValueError, match="n_grid"):
        align([], n_grid=1)


# ---------------------------------------------------------------------- band
@pytest.fixture
def matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    m = rng.normal(size=(5, 40))
    m[0, :10] = np.nan
    m[1:4, 20] = np.nan
    m[:, 30] = np.nan
    m[1:, 35] = np.nan  # a single value in column 35
    return m


def test_band_std(matrix: np.ndarray) -> None:
    mean, lo, hi = band(matrix, "std")
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected_mean = np.nanmean(matrix, axis=0)
        std = np.nanstd(matrix, axis=0, ddof=1)
    cols = [c for c in range(40) if c not in (30, 35)]
    np.testing.assert_allclose(mean, expected_mean, equal_nan=True)
    np.testing.assert_allclose(lo[cols], (expected_mean - std)[cols])
    np.testing.assert_allclose(hi[cols], (expected_mean + std)[cols])
    assert lo[35] == hi[35] == mean[35] == matrix[0, 35]  # one value: no spread
    assert np.isnan([mean[30], lo[30], hi[30]]).all()


def test_band_ci95(matrix: np.ndarray) -> None:
    mean, lo, hi = band(matrix, "ci95")
    for c in (0, 15, 20, 39):
        col = matrix[:, c][~np.isnan(matrix[:, c])]
        n = col.size
        half = stats.t.ppf(0.975, n - 1) * col.std(ddof=1) / np.sqrt(n)
        assert mean[c] == pytest.approx(col.mean())
        assert lo[c] == pytest.approx(col.mean() - half)
        assert hi[c] == pytest.approx(col.mean() + half)
    lo2, hi2 = stats.t.interval(0.95, 4, loc=matrix[:, 15].mean(), scale=stats.sem(matrix[:, 15]))
    assert (lo[15], hi[15]) == pytest.approx((lo2, hi2))


def test_band_minmax(matrix: np.ndarray) -> None:
    mean, lo, hi = band(matrix, "minmax")
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(lo, np.nanmin(matrix, axis=0), equal_nan=True)
        np.testing.assert_allclose(hi, np.nanmax(matrix, axis=0), equal_nan=True)


def test_band_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        band(np.zeros((2, 2)), "iqr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="matrix"):
        band(np.zeros(3), "std")


# ---------------------------------------------------------------------- robust_range
def test_robust_range_percentiles_with_padding() -> None:
    lo, hi = robust_range(np.arange(101.0))
    assert (lo, hi) == pytest.approx((5 - 4.5, 95 + 4.5))
    lo, hi = robust_range([1.0, 10.0, 100.0, 1000.0, np.nan, np.inf], lo_pct=0, hi_pct=100, log=True)
    assert (math.log10(lo), math.log10(hi)) == pytest.approx((-0.15, 3.15))


def test_robust_range_ignores_a_spike_and_unusable_values() -> None:
    values = np.r_[np.linspace(1.0, 0.1, 1000), 1e6, -np.inf, np.nan]
    lo, hi = robust_range(values)
    assert hi < 2.0 and lo > 0.0
    lo, hi = robust_range(np.r_[values, 0.0, -5.0], log=True)
    assert lo > 0 and hi < 2.0
    assert robust_range([np.nan, np.inf]) is None
    assert robust_range([0.0, -1.0], log=True) is None
    assert robust_range([]) is None


def test_robust_range_reach_keeps_near_values_but_not_spikes() -> None:
    values = np.r_[np.linspace(0.0, 1.0, 1000), 1.06, 50.0]
    plain = robust_range(values, lo_pct=1, hi_pct=99)
    wide = robust_range(values, lo_pct=1, hi_pct=99, reach=0.25)
    assert plain[1] < 1.06 < wide[1] < 2.0
    span = (wide[1] - wide[0]) / 1.1  # the unpadded range, padded by 5% each side
    assert wide[0] + 0.05 * span == pytest.approx(0.0, abs=1e-12)  # the lower end reaches the minimum, 0


def test_robust_range_constant_values_get_a_small_range() -> None:
    lo, hi = robust_range([2.0, 2.0])
    assert lo < 2.0 < hi
    lo, hi = robust_range([0.0])
    assert lo < 0.0 < hi
    with pytest.raises(ValueError, match="lo_pct"):
        robust_range([1.0], lo_pct=90, hi_pct=10)
