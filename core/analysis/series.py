"""Numeric helpers behind the charts: smoothing, reduction, alignment, bands and robust axis ranges.

Everything here works on plain numpy arrays (no pandas, no plotly), never raises on NaN or +-Inf in the data, and
raises `ValueError` naming the argument and what is allowed when an argument is bad.

- `ema_smooth`: TensorBoard's debiased exponential moving average (the "Smoothing" slider), exactly.
- `downsample_indices`: an M4-style reduction that keeps first/last/min/max of each bucket and every non-finite
  point with its neighbours, so a plotted line keeps its spikes and its NaN gaps.
- `align`: several runs on a common x grid by linear interpolation (union range, NaN outside a run's range).
- `band`: mean and a lower/upper band (std, min/max or 95% t-interval) over runs, ignoring NaN.
- `robust_range`: a percentile axis range that a single spike cannot blow up.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Literal, Sequence

import numpy as np
from numpy.typing import ArrayLike

BandKind = Literal["std", "minmax", "ci95"]
BAND_KINDS: tuple[str, ...] = ("std", "minmax", "ci95")

__all__ = ["BAND_KINDS", "BandKind", "align", "band", "downsample_indices", "ema_smooth", "robust_range"]


# ---------------------------------------------------------------------- argument checks
def check_weight(name: str, weight: float) -> float:
    """`weight` as a float in [0, 1), or ValueError naming `name`."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not (0.0 <= float(weight) < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1) (0 is off); got {weight!r}")
    return float(weight)


def check_int(name: str, value: int, minimum: int) -> int:
    """`value` as an int >= `minimum`, or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}; got {value!r}")
    return int(value)


def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of numbers") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got an array of shape {arr.shape}")
    return arr


# ---------------------------------------------------------------------- smoothing
def ema_smooth(values: ArrayLike, weight: float) -> np.ndarray:
    """TensorBoard's classic smoothing: a debiased EMA that passes non-finite values through.

    For each value: a non-finite value is output unchanged and does not touch the state; otherwise
    `last = last * w + (1 - w) * v`, `n += 1` and the output is `last / (1 - w**n)`. Like TensorBoard, a series
    whose values are all equal is returned as is. `weight` must be in [0, 1); 0 returns a copy of the input.
    """
    w = check_weight("weight", weight)
    v = _as_1d("values", values)
    out = v.copy()
    if w == 0.0 or v.size == 0 or np.all(v == v[0]):
        return out
    finite = np.isfinite(v)
    fv = v[finite]
    if fv.size == 0:
        return out
    # last_k = w * last_{k-1} + (1 - w) * v_k with last_0 = 0, over the finite values only.
    from scipy import signal  # noqa: PLC0415 - the store imports this module; scipy loads only to smooth

    ema = signal.lfilter([1.0 - w], [1.0, -w], fv)
    debias = 1.0 - np.power(w, np.arange(1, fv.size + 1, dtype=float))
    out[finite] = ema / debias
    return out


# ---------------------------------------------------------------------- reduction
def downsample_indices(x: ArrayLike, y: ArrayLike, *, max_points: int = 2000) -> np.ndarray:
    """Sorted unique indices of the points to keep so a line of `y` over `x` looks the same with fewer points.

    M4-style: the points are split by index into `max_points // 4` equal buckets and each bucket keeps its first,
    last, minimum and maximum (first occurrence within the bucket), so the global first/last point and the global
    minimum and maximum are always kept. On top of that every non-finite point (NaN, +-Inf) and its two
    neighbours are kept, so a NaN gap or a divergence is never reduced away. The result holds at most
    `max_points` points plus the non-finite ones and their neighbours. Input with at most `max_points` points
    returns all indices. Buckets are by index, not by x: metrics are logged at regular steps, so the two agree.
    """
    max_points = check_int("max_points", max_points, 4)
    xs = np.asarray(x)
    ys = _as_1d("y", y)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"x must be 1-D with the length of y ({ys.size}); got shape {xs.shape}")
    n = ys.size
    if n <= max_points:
        return np.arange(n, dtype=np.intp)

    finite = np.isfinite(ys)
    n_buckets = max_points // 4
    size = -(-n // n_buckets)  # ceil: every bucket but the last holds `size` points
    n_b = -(-n // size)
    pad = n_b * size - n
    lo_src = np.concatenate([np.where(finite, ys, np.inf), np.full(pad, np.inf)]).reshape(n_b, size)
    hi_src = np.concatenate([np.where(finite, ys, -np.inf), np.full(pad, -np.inf)]).reshape(n_b, size)
    starts = np.arange(n_b, dtype=np.intp) * size
    ends = np.minimum(starts + size, n) - 1
    # Padding sits after the real points and argmin/argmax return the first of equal values, so a padded slot
    # is never chosen.
    mins = starts + np.argmin(lo_src, axis=1)
    maxs = starts + np.argmax(hi_src, axis=1)
    keep = [starts, ends, mins, maxs, np.array([0, n - 1], dtype=np.intp)]
    return _with_nonfinite(keep, finite)


def bucket_indices(x: np.ndarray, y: np.ndarray, *, lo: float, hi: float, buckets: int) -> np.ndarray:
    """Sorted unique indices of what an exact drawing of `y` over `x` needs at `buckets` pixels across [lo, hi]:
    the first, last, minimum and maximum point of every bucket (equal x-widths, by x, not by index), and every
    non-finite point with its two neighbours. `x` must be sorted. The M4 rule: lines through these points cover
    the same pixels as lines through all of them."""
    return bucket_indices_many([x], [y], lo=[lo], hi=[hi], buckets=[buckets])[0]


def bucket_indices_many(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *, lo: Sequence[float],
                        hi: Sequence[float], buckets: Sequence[int]) -> list[np.ndarray]:
    """`bucket_indices` of several series, each with its own range and bucket count, in one pass of numpy over
    all of them: a chart's hundred curves cost one call instead of a hundred (numpy's per-call overhead, not the
    arithmetic, is most of the time of a curve of a few thousand points)."""
    counts = [check_int("buckets", b, 1) for b in buckets]
    y_parts = [_as_1d("y", y) for y in ys]
    sizes = np.array([y.size for y in y_parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    if not y_parts or offsets[-1] == 0:
        return [np.arange(n, dtype=np.intp) for n in sizes]
    x = np.concatenate(xs).astype(float, copy=False)
    y = np.concatenate(y_parts)
    n = y.size
    nb = np.array(counts, dtype=np.int64)
    low, high = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    width = np.where(high > low, (high - low) / nb, 1.0)
    # A point's bucket: floor((x - lo) / width), by a true division (a floor division of floats is 15 times
    # slower); with whole-number edges and widths, as the store's summaries are read, the same as `//`.
    bucket = np.floor((x - np.repeat(low, sizes)) / np.repeat(width, sizes))
    np.maximum(bucket, 0, out=bucket)
    np.minimum(bucket, np.repeat(nb - 1.0, sizes), out=bucket)
    # every series' buckets numbered apart (whole numbers in float64, exact): series i's run from the sum of the
    # earlier series' counts
    bucket += np.repeat(np.concatenate([[0], np.cumsum(nb)[:-1]]).astype(float), sizes)
    starts = np.flatnonzero(np.concatenate([[True], bucket[1:] != bucket[:-1]]))
    ends = np.concatenate([starts[1:], [n]]) - 1
    finite = np.isfinite(y)
    per_bucket = ends - starts + 1
    keep = [starts, ends]
    # each bucket's first minimum, then its first maximum, of its finite values: fmin and fmax pass over NaN, so
    # only an infinity needs its own copy of the values
    extremes = ((np.fmin, y), (np.fmax, y)) if not np.isinf(y).any() else \
        ((np.minimum, np.where(finite, y, np.inf)), (np.maximum, np.where(finite, y, -np.inf)))
    for reduce, src in extremes:
        best = reduce.reduceat(src, starts)
        hits = np.flatnonzero(src == np.repeat(best, per_bucket))
        first = np.ones(hits.size, dtype=bool)  # hits are in x order: a bucket's first hit follows another bucket's
        first[1:] = bucket[hits[1:]] != bucket[hits[:-1]]
        keep.append(hits[first])
    for i in np.flatnonzero(sizes <= 4 * nb):  # short enough to draw whole
        keep.append(np.arange(offsets[i], offsets[i + 1]))
    # A non-finite point's neighbour across two series is the other series' first or last point: kept anyway.
    picked = _with_nonfinite(keep, finite)
    cuts = np.searchsorted(picked, offsets)
    return [picked[cuts[i]:cuts[i + 1]] - offsets[i] for i in range(len(y_parts))]


def _with_nonfinite(keep: list[np.ndarray], finite: np.ndarray) -> np.ndarray:
    """The sorted unique union of `keep` and every non-finite point with its two neighbours, so a NaN gap or a
    divergence is never reduced away. A mask of the points, not `np.unique`: linear, and a third of the time."""
    mask = ~finite
    if mask.any():
        mask[1:] |= ~finite[:-1]
        mask[:-1] |= ~finite[1:]
    for index in keep:
        mask[index] = True
    return np.flatnonzero(mask).astype(np.intp, copy=False)


# ---------------------------------------------------------------------- alignment and bands
def align(runs_xy: Sequence[tuple[ArrayLike, ArrayLike]], *, n_grid: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Put several runs on one x grid by linear interpolation: `(grid, matrix)` with one matrix row per run.

    The grid spans the union of the runs' x ranges with `n_grid` evenly spaced points; where a run has no data
    (outside its own x range) its row is NaN. A NaN value in a run makes the interpolated values on both sides
    of it NaN (an Inf makes them Inf), so a gap is never bridged. Points with non-finite x are dropped and
    repeated x values keep their first point. When the runs have at most `n_grid` distinct x values in all (the
    epochs of per-epoch metrics, short runs), the grid is exactly those values, so every observed point is on
    it; `n_grid` is an upper bound. With no points at all the grid is empty and the matrix has shape
    (len(runs_xy), 0).
    """
    n_grid = check_int("n_grid", n_grid, 2)
    cleaned: list[tuple[np.ndarray, np.ndarray]] = []
    for i, pair in enumerate(runs_xy):
        try:
            xr, yr = pair
        except (TypeError, ValueError):
            raise ValueError(f"runs_xy[{i}] must be an (x, y) pair of arrays") from None
        xa = _as_1d(f"runs_xy[{i}] x", xr)
        ya = _as_1d(f"runs_xy[{i}] y", yr)
        if xa.shape != ya.shape:
            raise ValueError(f"runs_xy[{i}]: x and y must have the same length; got {xa.size} and {ya.size}")
        ok = np.isfinite(xa)
        xa, ya = xa[ok], ya[ok]
        xa, first = np.unique(xa, return_index=True)  # sorted, duplicates dropped
        cleaned.append((xa, ya[first]))

    nonempty = [xa for xa, _ in cleaned if xa.size]
    if not nonempty:
        return np.empty(0), np.full((len(cleaned), 0), np.nan)
    union = np.unique(np.concatenate(nonempty))
    if union.size <= n_grid:
        grid = union
    else:
        grid = np.linspace(union[0], union[-1], n_grid)

    matrix = np.full((len(cleaned), grid.size), np.nan)
    with np.errstate(invalid="ignore"):
        for i, (xa, ya) in enumerate(cleaned):
            if xa.size == 0:
                continue
            row = np.interp(grid, xa, ya)
            row[(grid < xa[0]) | (grid > xa[-1])] = np.nan
            matrix[i] = row
    return grid, matrix


def band(matrix: ArrayLike, kind: BandKind = "std") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(mean, lo, hi)` over the rows of `matrix` (axis 0), ignoring NaN.

    kind "std": mean +- the sample standard deviation (ddof=1; 0 where a column has one value);
    "ci95": mean +- t(0.975, n-1) * std / sqrt(n), the 95% t-interval of the mean (0 where n = 1);
    "minmax": the column's nanmin and nanmax. Columns without any value are NaN in all three.
    """
    if kind not in BAND_KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, BAND_KINDS))}; got {kind!r}")
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D (one row per run); got shape {m.shape}")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        n = np.sum(~np.isnan(m), axis=0)
        mean = np.nanmean(m, axis=0) if m.shape[0] else np.full(m.shape[1], np.nan)
        if kind == "minmax":
            if not m.shape[0]:
                return mean, mean.copy(), mean.copy()
            return mean, np.nanmin(m, axis=0), np.nanmax(m, axis=0)
        std = np.where(n > 1, np.nanstd(m, axis=0, ddof=1), 0.0) if m.shape[0] else np.zeros(m.shape[1])
        if kind == "std":
            half = std
        else:
            from scipy import stats  # noqa: PLC0415

            t = stats.t.ppf(0.975, np.maximum(n - 1, 1))
            half = np.where(n > 1, t * std / np.sqrt(np.maximum(n, 1)), 0.0)
        return mean, mean - half, mean + half


# ---------------------------------------------------------------------- axis ranges
def robust_range(
    values: ArrayLike,
    *,
    lo_pct: float = 5.0,
    hi_pct: float = 95.0,
    log: bool = False,
    padding: float = 0.05,
    reach: float = 0.0,
) -> tuple[float, float] | None:
    """An axis range from the `lo_pct` and `hi_pct` percentiles of the finite values, padded by `padding` of the
    span on each side (in log10 space when `log`, where only positive values count). The range is in data units
    (a log axis wants `log10` of it). A constant series gets a small range around its value. None when there is
    no usable value.

    `reach` > 0 widens the percentile range towards the data's min and max by at most `reach` times the
    percentile span on each side, Tukey-fence style: values just beyond the percentiles (the start of a loss
    curve) stay in view, far outliers (a spike) do not.
    """
    for name, pct in (("lo_pct", lo_pct), ("hi_pct", hi_pct)):
        if isinstance(pct, bool) or not isinstance(pct, numbers.Real) or not 0.0 <= float(pct) <= 100.0:
            raise ValueError(f"{name} must be a number in [0, 100]; got {pct!r}")
    if lo_pct >= hi_pct:
        raise ValueError(f"lo_pct must be below hi_pct; got lo_pct={lo_pct!r}, hi_pct={hi_pct!r}")
    if isinstance(padding, bool) or not isinstance(padding, numbers.Real) or not 0.0 <= float(padding) <= 1.0:
        raise ValueError(f"padding must be a number in [0, 1]; got {padding!r}")
    if isinstance(reach, bool) or not isinstance(reach, numbers.Real) or not 0.0 <= float(reach) <= 10.0:
        raise ValueError(f"reach must be a number in [0, 10]; got {reach!r}")
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return None
    lo, hi = (float(p) for p in np.percentile(v, [lo_pct, hi_pct]))
    vmin, vmax = float(v.min()), float(v.max())
    if log:
        lo, hi, vmin, vmax = (math.log10(t) for t in (lo, hi, vmin, vmax))
    if reach:
        span = hi - lo
        lo, hi = max(vmin, lo - reach * span), min(vmax, hi + reach * span)
    if log:
        pad = padding * (hi - lo) if hi > lo else 0.1
        return 10.0 ** (lo - pad), 10.0 ** (hi + pad)
    if hi > lo:
        pad = padding * (hi - lo)
    else:
        pad = abs(lo) * max(padding, 0.01) if lo != 0 else 1.0
    return lo - pad, hi + pad
