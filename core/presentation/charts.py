"""The chart layer: pure functions from the run store's data frames to Plotly figures.

Over 400 lines: `comparison_figure` is one function of about 220 lines whose options (layout, colour, dash,
groups with bands, facets, smoothing, log y, robust range) interact; reading them in one place is clearer than
following them through helpers. What it plots (curves, reduction, labels, argument checks) is in
`core.presentation.chart_data`.

Inputs (see `SERIES_COLUMNS`):

- `series`: one row per logged value, columns run_id, key, step, epoch, value (NaN and +-Inf allowed), wall_time.
- `runs`: indexed by run_id, a `name` column and one column per config field; any column can colour, dash,
  group or facet the curves.

Every figure is built from `go.Scatter` traces (SVG export works), every trace is reduced with
`downsample_indices` to about `max_points` points (fewer when a figure's curves together would pass
FIGURE_POINTS: a browser draws a thousand runs' curves, not a thousand times 2,000 points), and every trace
carries a `meta` dict
`{"run_id", "metric", "kind"}` (kind "raw", "smoothed", "mean" or "band"; group traces have run_id None and add
"run_ids" and "group") so tests and export code can find traces without parsing names.

Decisions worth knowing:

- x "epoch" is *epochs completed*: `step / steps_per_epoch`, with steps_per_epoch estimated per run from the
  largest step of each epoch. Per-step metrics get fractional epochs, and the per-epoch value of 0-based epoch e
  sits at e + 1, at the same place as the last step of that epoch (like the step axis, just rescaled).
- Smoothing is TensorBoard's, applied to the full-resolution series before the reduction (and to per-epoch
  metrics too). Smoothed traces are solid; the raw trace stays behind at opacity 0.25, out of the legend.
- Legend: without color_by/dash_by each run is its own legend group (raw and smoothed toggle together, and in
  small multiples the run is listed once and toggles in every subplot). With color_by and/or dash_by the legend
  is grouped by those values ("activation=elu, batchnorm=True" as group title; a click toggles the group).
- Legend placement (`core.presentation.legend.plan_legend`): up to 8 entries of up to 48 characters stay on
  the right, as Plotly puts them; more go in rows below the plot (horizontal, anchored to the figure's bottom),
  so the plot keeps its width, and the figure grows by the legend's estimated height (at most 320 px, it scrolls
  beyond). show_legend=False hides it (and adds nothing). With more than 8 runs or legend entries the figure is
  at least 600 px tall before the legend, so the plot is not a small box.
- In overlay with several metrics and no dash_by, the line dash tells the metrics apart.
- group_by aggregates over the fields in group_by plus color_by, dash_by and (layout "field") facet_field, so a
  group never mixes colours, dashes or facets. Groups are aligned with `align(..., n_grid=max_points // 2)`: the
  union of the runs' x values when there are that few (per-epoch metrics: exact, no interpolation), else an even
  grid (the band polygon then holds about max_points points). NaN in a run is ignored by the mean (nanmean), so
  a diverged seed drops out of the mean where it is NaN; "n=" counts the runs with data for that metric, "n=3→2"
  says two are left at the right end, and a mean's hover gives the runs at each point.
- `runs` is the selection: its order sets trace order and colours; series rows of other runs are ignored.
  Colours are Plotly's ten, or 24 darker ones (`WIDE_PALETTE`) when more lines need a colour of their own.
- log_y drops non-positive values from the plotted arrays (for groups: before aligning; a band's lower edge
  below zero is lifted to the smallest positive value of the group's data).
- Subplots are kept only for metrics that have data in at least one selected run; the x title is on the bottom
  row of a shared-x layout only.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Collection, Hashable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import plotly.io
from plotly.subplots import make_subplots

from core.analysis import series as _series
from core.analysis.series import (BAND_KINDS, BandKind, align, band, check_int, check_weight, downsample_indices,
                                  ema_smooth, robust_range)
from core.presentation.chart_data import (NONFINITE_SYMBOLS, SERIES_COLUMNS, band_polygon, check_choice, check_field,
                                          check_flag, check_frame, check_names, check_series, columns_text,
                                          config_label, json_value, natural_key, nonfinite_marks, plain_value,
                                          reduce_points, series_curves, sorted_unique, unique_values, value_sort_key)
from core.presentation.legend import MANY_MIN_HEIGHT, SIDE_MAX_ENTRIES, LegendEntry, plan_legend


__all__ = [
    "BAND_KINDS", "EMPTY_MESSAGE", "LAYOUTS", "SERIES_COLUMNS", "X_OPTIONS", "X_TITLES",
    "align", "band", "comparison_figure", "diff_table", "downsample_indices", "ema_smooth", "robust_range",
    "run_figure",
]
XOption = Literal["step", "epoch", "time"]
LayoutOption = Literal["overlay", "metric", "field"]


X_OPTIONS: tuple[str, ...] = ("step", "epoch", "time")


LAYOUTS: tuple[str, ...] = ("overlay", "metric", "field")


X_TITLES: dict[str, str] = {"step": "step", "epoch": "epoch", "time": "time (s)"}




EMPTY_MESSAGE = "No data for the selected runs and metrics"


PALETTE: tuple[str, ...] = tuple(plotly.colors.qualitative.Plotly)
# More lines than PALETTE has colours: 24 dark ones, distinct on white, before colours repeat
WIDE_PALETTE: tuple[str, ...] = tuple(plotly.colors.qualitative.Dark24)
# Points a figure's line traces hold at most, all together, and each at least: each of many curves is reduced
# further (2,000 curves of 2,000 points were 29 MB of figure, and a browser froze on them), never below a shape
FIGURE_POINTS = 200_000
MIN_CURVE_POINTS = 100


def palette(lines: int) -> tuple[str, ...]:
    """The colours for `lines` lines of distinct colour: PALETTE, or WIDE_PALETTE when they are more."""
    return PALETTE if lines <= len(PALETTE) else WIDE_PALETTE


def curve_points(max_points: int, curves: int) -> int:
    """The points each of `curves` line traces is reduced to: `max_points`, fewer when together they would pass
    FIGURE_POINTS, never fewer than MIN_CURVE_POINTS (or `max_points`, if smaller)."""
    return min(max_points, max(MIN_CURVE_POINTS, FIGURE_POINTS // max(1, curves)))


DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


RAW_OPACITY = 0.25


BAND_ALPHA = 0.2


# the 5th-95th percentile range, widened a little towards the data
ROBUST_Y = {"lo_pct": 5.0, "hi_pct": 95.0, "reach": 0.25}


MARKER_MAX_POINTS = 60  # series this short (per-epoch metrics) get markers, so a single epoch is visible


TEMPLATE = "plotly_white"
_TEMPLATE_JSON: dict[str, Any] = {}  # TEMPLATE as plain JSON, made once per process


def _use_template(fig: go.Figure) -> go.Figure:
    """`fig` on TEMPLATE. Plotly validates a template each time one is set (10-25 ms: it is most of a small
    chart's time); this one was validated once, so a copy of its JSON goes into the layout as it is. Reading
    `fig.layout.template` later builds the usual object from it, and setting one replaces it as usual."""
    if not _TEMPLATE_JSON:
        _TEMPLATE_JSON.update(plotly.io.templates[TEMPLATE].to_plotly_json())
    fig.layout._props["template"] = copy.deepcopy(_TEMPLATE_JSON)
    return fig


_X_HOVER = {"step": "%{x}", "epoch": "%{x:.3f}", "time": "%{x:.1f}"}


def comparison_figure(
    series: pd.DataFrame,
    runs: pd.DataFrame,
    *,
    metrics: Sequence[str],
    x: XOption = "step",
    smoothing: float = 0.0,
    log_y: bool = False,
    layout: LayoutOption = "overlay",
    facet_field: str | None = None,
    color_by: str | None = None,
    dash_by: str | None = None,
    group_by: Sequence[str] = (),
    band: BandKind = "std",
    robust_y: bool = False,
    max_points: int = 2000,
    title: str | None = None,
    show_legend: bool = True,
    diverged: Collection[Hashable] = (),
    window: tuple[float, float] | None = None,
) -> go.Figure:
    """Loss curves of the runs in `runs` for `metrics`, overlaid or as small multiples, per run or per group.

    layout "overlay": one chart, one trace per (run, metric), named "<run name> · <metric>" with several metrics
    and "<run name>" with one. "metric": one subplot per metric, shared x. "field": one column per value of
    `facet_field` (required), one row per metric. `group_by` replaces the runs by one mean line and one filled
    band (`band`: "std", "minmax" or "ci95") per group and metric, named like "batchnorm=True (n=3)".
    An empty selection returns a figure whose only content is the annotation `EMPTY_MESSAGE`.
    `show_legend` False hides the legend; a long legend goes below the plot (see "Legend placement" above).
    A run in `diverged` (ids of runs that stopped as diverged) gets a star at its curves' last finite point even
    where the curve itself stayed finite (the NaN was in a gradient or a logit, not in the plotted metric).
    `window` (first, last) on the x axis: only those points are drawn, but smoothing starts from the first point
    of `series`, so a zoomed curve is the whole curve's smoothed values there (as TensorBoard's), not a new EMA.
    """
    metric_list = check_names("metrics", metrics)
    check_choice("x", x, X_OPTIONS)
    smoothing = check_weight("smoothing", smoothing)
    check_flag("log_y", log_y)
    check_choice("layout", layout, LAYOUTS)
    check_choice("band", band, BAND_KINDS)
    check_flag("robust_y", robust_y)
    check_flag("show_legend", show_legend)
    max_points = check_int("max_points", max_points, 4)
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a string or None; got {title!r}")
    if window is not None and not (len(window) == 2 and window[0] <= window[1]):
        raise ValueError(f"window must be (first, last) with first <= last; got {window!r}")
    check_frame("runs", runs)
    for arg, field in (("facet_field", facet_field), ("color_by", color_by), ("dash_by", dash_by)):
        if field is not None:
            check_field(arg, field, runs)
    group_fields = [check_field("group_by", f, runs) for f in check_names("group_by", group_by)]
    if layout == "field" and facet_field is None:
        raise ValueError(f"facet_field is required with layout 'field'; allowed: {columns_text(runs)}")

    runs = runs[~runs.index.duplicated()]
    run_ids = unique_values(runs.index)
    curves = series_curves(series, run_ids, metric_list, x)
    if not curves:
        return _empty_figure(title)

    plotted_runs = [rid for rid in run_ids if any((rid, m) in curves for m in metric_list)]
    shown_metrics = [m for m in metric_list if any((rid, m) in curves for rid in plotted_runs)]
    values = {f: {rid: plain_value(runs.at[rid, f]) for rid in plotted_runs}
              for f in {*group_fields, color_by, dash_by, facet_field} - {None}}

    # Panels: (row, col) of each (facet value, metric).
    facets: list[Any] = [None]
    if layout == "field":
        facets = sorted_unique(values[facet_field][rid] for rid in plotted_runs)
    row_of = {m: (i + 1 if layout != "overlay" else 1) for i, m in enumerate(shown_metrics)}

    def cell(rid: Hashable, metric: str) -> tuple[int, int]:
        col = facets.index(values[facet_field][rid]) + 1 if layout == "field" else 1
        return row_of[metric], col

    dash_metric = layout == "overlay" and len(shown_metrics) > 1 and dash_by is None
    color_values = sorted_unique(values[color_by].values()) if color_by else []
    dash_values = sorted_unique(values[dash_by].values()) if dash_by else []
    several = layout == "overlay" and len(shown_metrics) > 1

    items: list[tuple[dict[str, Any], int, int]] = []  # trace dicts: built into the figure unvalidated, at once
    pool: dict[int, list[np.ndarray]] = {}
    seen_legend: set[tuple[str, str]] = set()

    def add(trace_kwargs: dict[str, Any], row: int, col: int, *, legend_entry: bool) -> None:
        key = (trace_kwargs["legendgroup"], trace_kwargs["name"])
        show = legend_entry and key not in seen_legend
        if legend_entry:
            seen_legend.add(key)
        items.append(({"type": "scatter", "showlegend": show, **trace_kwargs}, row, col))
        pool.setdefault(row, []).append(np.asarray(trace_kwargs["y"], dtype=float))

    x_hover = _X_HOVER[x]
    if not group_fields:
        names = _run_names(runs, plotted_runs)
        colors = palette(len(color_values) if color_by else len(run_ids))
        drawn = sum(1 for rid in plotted_runs for m in shown_metrics if (rid, m) in curves) * (2 if smoothing else 1)
        points = curve_points(max_points, drawn)
        for pos, rid in enumerate(run_ids):
            if rid not in names:
                continue
            color = colors[(color_values.index(values[color_by][rid]) if color_by else pos) % len(colors)]
            style_label = ", ".join(config_label(f, values[f][rid]) for f in (color_by, dash_by) if f)
            for metric in shown_metrics:
                if (rid, metric) not in curves:
                    continue
                xs, ys = curves[(rid, metric)]
                name = f"{names[rid]} · {metric}" if several else names[rid]
                dash = _dash(metric, shown_metrics, dash_metric, values[dash_by][rid] if dash_by else None,
                             dash_values)
                if style_label:
                    group: dict[str, Any] = {"legendgroup": f"style:{style_label}",
                                             "legendgrouptitle": {"text": style_label}}
                else:
                    group = {"legendgroup": f"run:{rid}:{metric}" if several else f"run:{rid}"}
                hover = f"%{{fullData.name}}<br>{X_TITLES[x]} {x_hover}<br>{metric} %{{y:.4g}}<extra></extra>"
                row, col = cell(rid, metric)
                layers = [("raw", ys)] if smoothing == 0 else [("raw", ys), ("smoothed", ema_smooth(ys, smoothing))]
                if window is not None:  # smoothed from the series' start, then cut to the window
                    inside = _inside(xs, window)
                    xs, ys, layers = xs[inside], ys[inside], [(kind, yy[inside]) for kind, yy in layers]
                for kind, yy in layers:
                    solid = kind == "smoothed" or smoothing == 0
                    px, py = reduce_points(xs, yy, log_y=log_y, max_points=points)
                    if px.size == 0:
                        continue
                    markers = solid and xs.size <= MARKER_MAX_POINTS
                    add({"x": px, "y": py, "name": name, "mode": "lines+markers" if markers else "lines",
                         "line": {"color": color, "dash": dash, "width": 2 if solid else 1},
                         "marker": {"size": 5, "color": color}, "opacity": 1.0 if solid else RAW_OPACITY,
                         "hovertemplate": hover, "meta": {"run_id": json_value(rid), "metric": metric, "kind": kind},
                         **group}, row, col, legend_entry=solid)
                for mark in _nonfinite_traces(xs, ys, color=color, metric=metric, rid=rid, x=x, log_y=log_y,
                                              group=group, diverged=rid in diverged):
                    items.append((mark, row, col))
    else:
        fields = list(dict.fromkeys([*group_fields, color_by, dash_by, facet_field if layout == "field" else None]))
        fields = [f for f in fields if f is not None]
        groups: dict[tuple, list[Hashable]] = {}
        for rid in plotted_runs:
            groups.setdefault(tuple(values[f][rid] for f in fields), []).append(rid)
        ordered = sorted(groups, key=lambda k: tuple(value_sort_key(v) for v in k))
        n_grid = max(2, max_points // 2)
        colors = palette(len(color_values) if color_by else len(ordered))
        for gpos, gkey in enumerate(ordered):
            members = groups[gkey]
            first = members[0]
            label = ", ".join(config_label(f, v) for f, v in zip(fields, gkey))
            color = colors[(color_values.index(values[color_by][first]) if color_by else gpos) % len(colors)]
            for metric in shown_metrics:
                pairs = []
                for rid in members:
                    if (rid, metric) not in curves:
                        continue
                    xs, ys = curves[(rid, metric)]
                    if smoothing:
                        ys = ema_smooth(ys, smoothing)
                    if window is not None:
                        inside = _inside(xs, window)
                        xs, ys = xs[inside], ys[inside]
                    if log_y:
                        keep = ~(ys <= 0)
                        xs, ys = xs[keep], ys[keep]
                    pairs.append((xs, ys))
                if not pairs:
                    continue
                grid, matrix = align(pairs, n_grid=n_grid)
                if grid.size == 0:
                    continue
                mean, lo, hi = _series.band(matrix, band)
                if log_y:
                    positive = matrix[np.isfinite(matrix) & (matrix > 0)]
                    floor = float(positive.min()) if positive.size else np.nan
                    lo = np.where(lo > 0, lo, floor)
                # runs with a value at each grid point (as the band counts them): a seed that diverged or ended
                # early leaves the mean from there on, and "n=3→2" says how many are left at the right end
                counts = np.sum(~np.isnan(matrix), axis=0)
                left = int(counts[np.flatnonzero(counts)[-1]]) if counts.any() else 0
                n_text = f"n={len(pairs)}" + (f"→{left}" if left < len(pairs) else "")
                name = f"{label} ({n_text})" + (f" · {metric}" if several else "")
                legendgroup = f"group:{label}:{metric}" if several else f"group:{label}"
                dash = _dash(metric, shown_metrics, dash_metric, values[dash_by][first] if dash_by else None,
                             dash_values)
                meta = {"run_id": None, "run_ids": [json_value(r) for r in members if (r, metric) in curves],
                        "group": label, "metric": metric}
                row, col = cell(first, metric)
                bx, by = band_polygon(grid, lo, hi)
                if bx.size:
                    add({"x": bx, "y": by, "name": name, "mode": "lines", "fill": "toself",
                         "fillcolor": _rgba(color, BAND_ALPHA), "line": {"width": 0, "color": color},
                         "hoverinfo": "skip", "legendgroup": legendgroup, "meta": {**meta, "kind": "band"}},
                        row, col, legend_entry=False)
                px, py = reduce_points(grid, mean, log_y=log_y, max_points=max_points)
                if px.size == 0:
                    continue
                markers = grid.size <= MARKER_MAX_POINTS
                hover = (f"%{{fullData.name}}<br>{X_TITLES[x]} {x_hover}<br>{metric} mean %{{y:.4g}} of "
                         f"%{{customdata}} of {len(pairs)} runs<extra></extra>")
                add({"x": px, "y": py, "name": name, "mode": "lines+markers" if markers else "lines",
                     "customdata": counts[np.searchsorted(grid, px)],
                     "line": {"color": color, "dash": dash, "width": 2}, "marker": {"size": 5, "color": color},
                     "hovertemplate": hover, "legendgroup": legendgroup, "meta": {**meta, "kind": "mean"}},
                    row, col, legend_entry=True)

    if not items:
        return _empty_figure(title)

    # ------------------------------------------------------------------ assemble
    x_title = X_TITLES[x]
    rows = len(shown_metrics) if layout != "overlay" else 1
    if layout == "overlay":
        fig = _figure([t for t, _, _ in items])
        fig.update_layout(xaxis_title=x_title, yaxis_title=shown_metrics[0] if len(shown_metrics) == 1 else "value",
                          height=480)
    elif layout == "metric":
        fig = _add_traces(make_subplots(rows=rows, cols=1, shared_xaxes=True,
                                        vertical_spacing=min(0.08, 0.3 / rows)), items)
        for r, metric in enumerate(shown_metrics, start=1):
            fig.update_yaxes(title_text=metric, row=r, col=1)
        fig.update_xaxes(title_text=x_title, row=rows, col=1)
        fig.update_layout(height=max(380, 240 * rows + 80))
    else:
        ncols = len(facets)
        fig = make_subplots(rows=rows, cols=ncols, shared_xaxes="all", shared_yaxes=True,
                            column_titles=[config_label(facet_field, v) for v in facets],
                            horizontal_spacing=min(0.03, 0.5 / ncols), vertical_spacing=min(0.08, 0.3 / rows))
        fig = _add_traces(fig, items)
        for r, metric in enumerate(shown_metrics, start=1):
            fig.update_yaxes(title_text=metric, row=r, col=1)
        for c in range(1, ncols + 1):
            fig.update_xaxes(title_text=x_title, row=rows, col=c)
        fig.update_layout(height=max(380, 260 * rows + 100))

    if log_y:
        fig.update_yaxes(type="log")
    if robust_y:
        for r in range(1, rows + 1):
            rng = robust_range(np.concatenate(pool.get(r, [np.empty(0)])), log=log_y, **ROBUST_Y)
            if rng is None:
                continue
            axis_range = [math.log10(rng[0]), math.log10(rng[1])] if log_y else list(rng)
            if layout == "overlay":
                fig.update_yaxes(range=axis_range, autorange=False)
            else:
                fig.update_yaxes(range=axis_range, autorange=False, row=r)
    fig.update_layout(title={"text": title} if title else None, showlegend=show_legend,
                      hovermode="closest", margin={"t": 60 if title or layout == "field" else 30})
    _place_legend(fig, [t for t, _, _ in items], show=show_legend, many_runs=len(plotted_runs) > SIDE_MAX_ENTRIES)
    return _use_template(fig)


def run_figure(
    series: pd.DataFrame,
    *,
    run_name: str,
    keys: Sequence[str] | None = None,
    x: XOption = "step",
    max_points: int = 2000,
    cols: int = 3,
) -> go.Figure:
    """Small multiples of the metrics of one run: one subplot per key (titled with the key), zoom shared on x.

    `series` holds the rows of one run (ValueError for several run_ids); `keys` picks and orders the metrics
    (default: every key, in natural order, so grad_norm/fc10 follows grad_norm/fc9); keys without rows are left
    out. Each trace is reduced with `downsample_indices`; `run_name` is the figure title.
    """
    if not isinstance(run_name, str):
        raise ValueError(f"run_name must be a string; got {run_name!r}")
    key_list = None if keys is None else check_names("keys", keys)
    check_choice("x", x, X_OPTIONS)
    max_points = check_int("max_points", max_points, 4)
    cols = check_int("cols", cols, 1)
    if len(series) == 0:
        return _empty_figure(run_name)
    check_series(series)
    ids = unique_values(series["run_id"])
    if len(ids) > 1:
        raise ValueError(f"series must hold the rows of one run for run_figure; got run_ids {ids[:10]}")
    rid = ids[0]
    if key_list is None:
        key_list = sorted(unique_values(series["key"]), key=natural_key)
    curves = series_curves(series, ids, key_list, x)
    present = [k for k in key_list if (rid, k) in curves]
    if not present:
        return _empty_figure(run_name)

    ncols = min(cols, len(present))
    nrows = -(-len(present) // ncols)
    specs = [[{} if r * ncols + c < len(present) else None for c in range(ncols)] for r in range(nrows)]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=present, specs=specs,
                        vertical_spacing=min(0.12, 0.4 / nrows), horizontal_spacing=min(0.08, 0.3 / ncols))
    traces, rows, columns = [], [], []
    color = PALETTE[0]
    flat: dict[int, float] = {}  # subplots whose finite values are all one value v
    for i, key in enumerate(present):
        xs, ys = curves[(rid, key)]
        finite = ys[np.isfinite(ys)]
        if finite.size and finite.min() == finite.max():
            flat[i] = float(finite[0])
        px, py = reduce_points(xs, ys, log_y=False, max_points=max_points)
        markers = xs.size <= MARKER_MAX_POINTS
        traces.append(dict(
            type="scatter", x=px, y=py, name=key, mode="lines+markers" if markers else "lines", showlegend=False,
            line={"color": color, "width": 1.5}, marker={"size": 5, "color": color},
            hovertemplate=f"{X_TITLES[x]} {_X_HOVER[x]}<br>{key} %{{y:.4g}}<extra></extra>",
            meta={"run_id": json_value(rid), "metric": key, "kind": "raw"}))
        rows.append(i // ncols + 1)
        columns.append(i % ncols + 1)
        for mark in _nonfinite_traces(xs, ys, color=color, metric=key, rid=rid, x=x, log_y=False):
            traces.append(mark)
            rows.append(i // ncols + 1)
            columns.append(i % ncols + 1)
    fig = _add_traces(fig, list(zip(traces, rows, columns)))
    for i, v in flat.items():  # a constant (lr 0.01) centred on its value, not on an axis from -0.5 that reads as 0
        half = abs(v) / 2 if v else 1.0
        fig.update_yaxes(range=[v - half, v + half], row=i // ncols + 1, col=i % ncols + 1)
    for name in [n for n in fig.layout if n.startswith("xaxis") and n != "xaxis"]:
        fig.layout[name].matches = "x"  # not the first one itself: Plotly warns of a loop
    for c in range(1, ncols + 1):  # x title under the lowest subplot of each column
        last_row = max(r for r, cc in zip(rows, columns) if cc == c)
        fig.update_xaxes(title_text=X_TITLES[x], row=last_row, col=c)
    _use_template(fig)
    fig.update_layout(title={"text": run_name}, showlegend=False,
                      height=max(320, 230 * nrows + 90), margin={"t": 80})
    return fig


def diff_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns of `runs` whose values differ between rows, with `name` (when present) first.

    Missing values (None, NaN) count as one value; 1 and 1.0 are equal; list values compare as tuples.
    """
    check_frame("runs", runs)
    differing = [c for c in runs.columns
                 if c != "name" and len({plain_value(v) for v in runs[c].tolist()}) > 1]
    front = ["name"] if "name" in runs.columns else []
    return runs.loc[:, front + differing].copy()


def _place_legend(fig: go.Figure, traces: Sequence[dict[str, Any]], *, show: bool, many_runs: bool) -> None:
    """A long legend below the plot and the figure taller by its rows; with many runs or entries, the figure at
    least `MANY_MIN_HEIGHT` px before the legend. A short legend and a few runs keep the layout's own height.
    `traces` are the figure's trace dicts (reading them back from the figure's objects costs 10 ms a chart)."""
    entries = [LegendEntry(t.get("legendgroup"), (t.get("legendgrouptitle") or {}).get("text") or None, t.get("name"))
               for t in traces if t.get("showlegend", True)]
    plan = plan_legend(entries, show=show)
    height = fig.layout.height
    if many_runs or len(entries) > SIDE_MAX_ENTRIES:
        height = max(height, MANY_MIN_HEIGHT)
    if plan.below:
        fig.update_layout(legend=plan.layout)
    fig.update_layout(height=height + plan.height_px)


def _nonfinite_traces(xs: np.ndarray, ys: np.ndarray, *, color: str, metric: str, rid: Hashable, x: str,
                      log_y: bool, group: dict[str, Any] | None = None, diverged: bool = False
                      ) -> list[dict[str, Any]]:
    """Markers for a curve's NaN and +-Inf points, and a star at its last finite point when a divergence follows
    (TensorBoard shows them; a line through NaN only leaves a gap), or when the run `diverged` though this curve
    stayed finite. Out of the legend, in the curve's group."""
    mx, my, labels, last = nonfinite_marks(xs, ys, log_y=log_y)
    if last is None and diverged:
        finite = np.flatnonzero(np.isfinite(ys) & ((ys > 0) if log_y else True))
        last = int(finite[-1]) if finite.size else None
    out = []
    common = {"type": "scatter", "showlegend": False, **{k: v for k, v in (group or {}).items() if k == "legendgroup"}}
    if mx.size:
        out.append(dict(
            x=mx, y=my, mode="markers", name=f"{metric} non-finite", text=labels,
            marker={"symbol": [NONFINITE_SYMBOLS[t] for t in labels], "size": 10, "color": color,
                    "line": {"width": 1.5, "color": "#b91c1c"}},
            hovertemplate=f"%{{text}} at {X_TITLES[x]} %{{x}}<br>{metric}<extra></extra>",
            meta={"run_id": json_value(rid), "metric": metric, "kind": "nonfinite"}, **common))
    if last is not None:
        out.append(dict(
            x=[xs[last]], y=[ys[last]], mode="markers", name=f"{metric} last finite", text=["last finite value"],
            marker={"symbol": "star", "size": 13, "color": color, "line": {"width": 1, "color": "#111827"}},
            hovertemplate=("last finite value before NaN/Inf" if mx.size else "last value before the run diverged")
            + f"<br>{X_TITLES[x]} %{{x}}<br>{metric} %{{y:.4g}}"
                          "<extra></extra>",
            meta={"run_id": json_value(rid), "metric": metric, "kind": "last_finite"}, **common))
    return out


def _figure(traces: list[dict[str, Any]], layout: go.Figure | None = None) -> go.Figure:
    """A figure of trace dicts this module built, on `layout`'s subplots (a `make_subplots` figure) or one plot.
    Plotly would validate every property of every trace (about 0.3 ms a trace, most of a 100-curve chart's time);
    these dicts are made here from checked inputs, so they go in as they are, and the layout, copied in afterwards,
    is a validated one: whatever is set on the figure later is checked and coerced as usual."""
    fig = go.Figure(data=traces, _validate=False)
    fig._validate = True
    fig.layout = layout.layout if layout is not None else go.Layout()
    if layout is not None:  # the subplot grid, so that update_xaxes(row=..., col=...) keeps working
        fig.__dict__["_grid_ref"] = layout._grid_ref
        fig.__dict__["_grid_str"] = layout._grid_str
    return fig


def _add_traces(fig: go.Figure, items: list[tuple[dict[str, Any], int, int]]) -> go.Figure:
    """`_figure` of these (trace dict, row, col) on the subplots of `fig` (from `make_subplots`)."""
    traces = []
    for trace, row, col in items:
        axes = fig._grid_ref[row - 1][col - 1][0].trace_kwargs  # {"xaxis": "x2", "yaxis": "y2"}, as add_trace does
        traces.append({**trace, **axes})
    return _figure(traces, fig)


def _empty_figure(title: str | None) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=EMPTY_MESSAGE, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 15})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    _use_template(fig)
    fig.update_layout(title={"text": title} if title else None, height=320)
    return fig


def _dash(metric: str, metrics: Sequence[str], by_metric: bool, dash_value: Any, dash_values: list[Any]) -> str:
    if dash_values:
        return DASHES[dash_values.index(dash_value) % len(DASHES)]
    if by_metric:
        return DASHES[metrics.index(metric) % len(DASHES)]
    return "solid"


def _inside(xs: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Which of `xs` lie in `window` (first, last), ends included."""
    return (xs >= window[0]) & (xs <= window[1])


def _rgba(color: str, alpha: float) -> str:
    r, g, b = plotly.colors.hex_to_rgb(color)
    return f"rgba({r}, {g}, {b}, {alpha})"


def _run_names(runs: pd.DataFrame, run_ids: Iterable[Hashable]) -> dict[Hashable, str]:
    names = {}
    for rid in run_ids:
        value = None
        if "name" in runs.columns:
            value = plain_value(runs.at[rid, "name"])
        names[rid] = str(value) if value not in (None, "") else f"run {rid}"
    return names
