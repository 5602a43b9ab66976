"""From stored series and run configs to what a chart plots: one curve per (run, metric) on the x the user
picked, reduced for drawing, band polygons, config values as hashable keys and legend labels, and the checks on the
arguments of `core.presentation.charts`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
import pandas as pd

from core.analysis.effects import format_value
from core.analysis.series import downsample_indices
from core.presentation.formatting import natural_key

SERIES_COLUMNS: tuple[str, ...] = ("run_id", "key", "step", "epoch", "value", "wall_time")


def series_curves(series: pd.DataFrame, run_ids: Sequence[Hashable], metrics: Sequence[str],
            x: str) -> dict[tuple[Hashable, str], tuple[np.ndarray, np.ndarray]]:
    """(run_id, metric) -> (x, y) at full resolution, in step order, for the runs and metrics that have rows."""
    if len(series) == 0 or not run_ids or not metrics:
        return {}
    check_series(series)
    sel = series[series["run_id"].isin(list(run_ids))]
    scale = steps_per_epoch(sel) if x == "epoch" else {}
    sel = sel[sel["key"].isin(list(metrics))]
    out: dict[tuple[Hashable, str], tuple[np.ndarray, np.ndarray]] = {}
    for (rid, key), g in sel.groupby(["run_id", "key"], sort=False):
        steps = g["step"].to_numpy()
        if steps.size > 1 and np.any(np.diff(steps) < 0):
            g = g.iloc[np.argsort(steps, kind="stable")]
            steps = g["step"].to_numpy()
        rid = plain_value(rid)
        if x == "step":
            xs = steps
        elif x == "time":
            xs = g["wall_time"].to_numpy(dtype=float)
        else:
            k = scale.get(rid)
            xs = steps / k if k else g["epoch"].to_numpy(dtype=float)
        ys = pd.to_numeric(g["value"], errors="coerce").to_numpy(dtype=float)
        if ys.size:
            out[(rid, key)] = (xs, ys)
    return out


def steps_per_epoch(frame: pd.DataFrame) -> dict[Hashable, float]:
    """Per run, optimizer steps per epoch: largest step of the last complete epoch / (that epoch + 1).

    The last observed epoch may be cut short (a diverged or cancelled run), so the epoch before it is used when
    there is one. Runs where this is not positive are left out (their x falls back to the epoch column).
    """
    if len(frame) == 0:
        return {}
    ends = frame.groupby(["run_id", "epoch"])["step"].max()
    out: dict[Hashable, float] = {}
    for rid, e in ends.groupby(level=0):
        epochs = e.index.get_level_values(1).to_numpy()
        steps = e.to_numpy(dtype=float)
        i = len(epochs) - 2 if len(epochs) > 1 else 0
        k = steps[i] / (float(epochs[i]) + 1.0) if epochs[i] >= 0 else 0.0
        if math.isfinite(k) and k > 0:
            out[plain_value(rid)] = k
    return out


def reduce_points(xs: np.ndarray, ys: np.ndarray, *, log_y: bool, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop non-positive y for log axes (NaN stays, as a gap), then downsample."""
    if log_y:
        keep = ~(ys <= 0)
        xs, ys = xs[keep], ys[keep]
    idx = downsample_indices(xs, ys, max_points=max_points)
    return xs[idx], ys[idx]


def band_polygon(grid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A closed polygon (upper edge forwards, lower edge back) per stretch where lo and hi are finite, separated
    by NaN so `fill="toself"` closes each stretch on its own."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return np.empty(0), np.empty(0)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if xs:
            xs.append(np.array([np.nan]))
            ys.append(np.array([np.nan]))
        xs.append(np.concatenate([grid[a:b], grid[a:b][::-1]]))
        ys.append(np.concatenate([hi[a:b], lo[a:b][::-1]]))
    return np.concatenate(xs), np.concatenate(ys)


def plain_value(value: Any) -> Any:
    """A config value as a plain, hashable Python value; missing (None, NaN, NA) is None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(plain_value(v) for v in value)
    if isinstance(value, dict):
        return repr(value)
    if isinstance(value, np.generic):
        value = value.item()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def json_value(value: Any) -> Any:
    value = plain_value(value)
    return list(value) if isinstance(value, tuple) else value


def config_label(field: str, value: Any) -> str:
    """A config value in a legend or a group's title as run names and the command line write it: batchnorm=true,
    hidden=[64, 64], lr=0.01."""
    return f"{field}={format_value(value)}"


def value_sort_key(value: Any) -> tuple:
    if value is None:
        return (3, 0.0, ())
    if isinstance(value, (bool, numbers.Real)):
        return (0, float(value), ())
    if isinstance(value, str):
        return (1, 0.0, natural_key(value))
    return (2, 0.0, natural_key(str(value)))


def sorted_unique(values: Iterable[Any]) -> list[Any]:
    return sorted(dict.fromkeys(values), key=value_sort_key)


def unique_values(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(plain_value(v) for v in values))


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}")


def check_names(name: str, values: str | Sequence[str]) -> list[str]:
    """A list of names; a single string counts as one name."""
    if isinstance(values, str):
        values = [values]
    if values is None or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of names; got {values!r}")
    out = list(dict.fromkeys(values))
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{name} must be a list of names (strings); got {bad[0]!r}")
    return out


def check_frame(name: str, frame: Any) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame; got {type(frame).__name__}")


def columns_text(runs: pd.DataFrame) -> str:
    cols = [repr(c) for c in runs.columns]
    return ", ".join(cols[:30]) + (", ..." if len(cols) > 30 else "") if cols else "(runs has no columns)"


def check_field(arg: str, field: Any, runs: pd.DataFrame) -> str:
    if not isinstance(field, str) or field not in runs.columns:
        raise ValueError(f"{arg} must be a column of runs, one of {columns_text(runs)}; got {field!r}")
    return field


def check_series(series: Any) -> None:
    check_frame("series", series)
    missing = [c for c in SERIES_COLUMNS if c not in series.columns]
    if missing:
        raise ValueError(f"series must have the columns {', '.join(SERIES_COLUMNS)}; missing {', '.join(missing)}")


NONFINITE_SYMBOLS = {"NaN": "x", "+Inf": "triangle-up", "-Inf": "triangle-down"}


def nonfinite_marks(xs: np.ndarray, ys: np.ndarray, *, log_y: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Where a curve is NaN or +-Inf, as markers a line cannot show: (x, y to draw at, label per point, and the
    index of the last finite point when non-finite values follow it, i.e. where a divergence began, else None).

    +Inf is drawn at the curve's largest finite value, -Inf at its smallest, NaN at the finite value before it (or
    after it, at the start); a curve with no finite value draws them at 0 (1 on a log axis)."""
    ys = np.asarray(ys, dtype=float)
    bad = ~np.isfinite(ys)
    if not bad.any():
        return np.empty(0), np.empty(0), [], None
    good = np.flatnonzero(~bad if not log_y else (~bad & (ys > 0)))
    if good.size:
        top, bottom = ys[good].max(), ys[good].min()
        before = np.maximum.accumulate(np.where(~bad, np.arange(ys.size), -1))
        fill = np.where(before >= 0, ys[np.maximum(before, 0)], ys[good[0]])
        if log_y:
            fill = np.where(fill > 0, fill, bottom)
    else:
        top = bottom = 1.0 if log_y else 0.0
        fill = np.full(ys.size, top)
    idx = np.flatnonzero(bad)
    vals = ys[idx]
    at = np.where(vals == np.inf, top, np.where(vals == -np.inf, bottom, fill[idx]))
    labels = ["+Inf" if v == np.inf else "-Inf" if v == -np.inf else "NaN" for v in vals.tolist()]
    finite = np.flatnonzero(~bad)
    last = int(finite[-1]) if finite.size and bad[finite[-1] + 1:].any() else None
    return np.asarray(xs)[idx], at, labels, last
