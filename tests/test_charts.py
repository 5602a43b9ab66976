"""The chart layer: figures are inspected through `fig.data` (trace meta, names, arrays) and `fig.layout`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from core.analysis.series import align, ema_smooth
from core.presentation.charts import EMPTY_MESSAGE, comparison_figure, diff_table, run_figure

STEPS_PER_EPOCH = 10


def make_series(n_steps: dict[int, int], *, per_epoch: tuple[str, ...] = ("val_loss",),
                per_step: tuple[str, ...] = ("train_loss",), seed: int = 0) -> pd.DataFrame:
    """Rows for runs {run_id: number of optimizer steps}: per-step metrics at steps 1..n, per-epoch metrics at
    each epoch's last step, values positive and decaying."""
    rng = np.random.default_rng(seed)
    frames = []
    for rid, n in n_steps.items():
        steps = np.arange(1, n + 1)
        epochs = (steps - 1) // STEPS_PER_EPOCH
        for j, key in enumerate(per_step):
            frames.append(pd.DataFrame({
                "run_id": rid, "key": key, "step": steps, "epoch": epochs,
                "value": np.exp(-steps / (n / 3)) * (1 + j) + 0.05 * rng.random(n) + 0.01 * rid,
                "wall_time": steps * 0.02}))
        ep = np.arange(n // STEPS_PER_EPOCH)
        for j, key in enumerate(per_epoch):
            frames.append(pd.DataFrame({
                "run_id": rid, "key": key, "step": (ep + 1) * STEPS_PER_EPOCH, "epoch": ep,
                "value": np.exp(-ep / 5.0) + 0.1 * j + 0.01 * rid + 0.02 * rng.random(ep.size),
                "wall_time": (ep + 1) * STEPS_PER_EPOCH * 0.02}))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["run_id", "key", "step"], kind="stable").reset_index(drop=True)


def make_runs(ids: list[int], **columns: list) -> pd.DataFrame:
    data = {"name": [f"run-{i}" for i in ids], **columns}
    return pd.DataFrame(data, index=pd.Index(ids, name="run_id"))


def kinds(fig: go.Figure) -> list[str]:
    return [t.meta["kind"] for t in fig.data]


def yaxes(fig: go.Figure) -> list[str]:
    return sorted(k for k in fig.layout.to_plotly_json() if k.startswith("yaxis"))


@pytest.fixture
def two_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_series({1: 200, 2: 150}), make_runs([1, 2], activation=["elu", "relu"], seed=[0, 0])


# ---------------------------------------------------------------------- overlay basics
def test_overlay_two_runs_two_metrics(two_runs) -> None:
    series, runs = two_runs
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"])
    assert [t.name for t in fig.data] == ["run-1 · train_loss", "run-1 · val_loss",
                                          "run-2 · train_loss", "run-2 · val_loss"]
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    assert [(t.meta["run_id"], t.meta["metric"]) for t in fig.data] == [
        (1, "train_loss"), (1, "val_loss"), (2, "train_loss"), (2, "val_loss")]
    assert kinds(fig) == ["raw"] * 4
    assert fig.layout.xaxis.title.text == "step"
    assert fig.layout.yaxis.title.text == "value"
    assert fig.layout.showlegend is True
    # full-resolution data when short: the trace is the series
    rows = series[(series.run_id == 1) & (series.key == "train_loss")]
    np.testing.assert_array_equal(fig.data[0].x, rows.step.to_numpy())
    np.testing.assert_array_equal(fig.data[0].y, rows.value.to_numpy())
    # each run its own colour; metrics told apart by dash
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert fig.data[0].line.dash != fig.data[1].line.dash


def test_overlay_one_metric_names_are_run_names(two_runs) -> None:
    series, runs = two_runs
    fig = comparison_figure(series, runs, metrics=["val_loss"], title="Validation")
    assert [t.name for t in fig.data] == ["run-1", "run-2"]
    assert fig.layout.yaxis.title.text == "val_loss"
    assert fig.layout.title.text == "Validation"


def test_x_time_and_epoch(two_runs) -> None:
    series, runs = two_runs
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], x="time")
    assert fig.layout.xaxis.title.text == "time (s)"
    np.testing.assert_allclose(fig.data[0].x[:3], [0.02, 0.04, 0.06])

    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], x="epoch")
    assert fig.layout.xaxis.title.text == "epoch"
    train, val = fig.data[0], fig.data[1]
    # epochs completed: step / steps per epoch; the value of 0-based epoch e sits at e + 1
    np.testing.assert_allclose(train.x[:3], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(val.x, np.arange(1, 21))
    assert train.x[-1] == val.x[-1] == 20.0


def test_epoch_axis_survives_a_run_cut_short_in_its_last_epoch() -> None:
    series = make_series({1: 200})
    series = series[series.step <= 125]  # 12 full epochs plus 5 steps
    fig = comparison_figure(series, make_runs([1]), metrics=["train_loss"], x="epoch")
    assert fig.data[0].x[-1] == pytest.approx(12.5)


# ---------------------------------------------------------------------- smoothing
def test_smoothing_gives_faint_raw_and_solid_smoothed_pairs(two_runs) -> None:
    series, runs = two_runs
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], smoothing=0.8)
    assert len(fig.data) == 8
    assert kinds(fig) == ["raw", "smoothed"] * 4
    for raw, smooth in zip(fig.data[::2], fig.data[1::2]):
        assert raw.meta["run_id"] == smooth.meta["run_id"] and raw.meta["metric"] == smooth.meta["metric"]
        assert raw.opacity == pytest.approx(0.25) and raw.showlegend is False
        assert smooth.opacity == 1.0 and smooth.line.dash == raw.line.dash
        assert raw.line.color == smooth.line.color
        assert raw.legendgroup == smooth.legendgroup
        rows = series[(series.run_id == raw.meta["run_id"]) & (series.key == raw.meta["metric"])]
        np.testing.assert_allclose(smooth.y, ema_smooth(rows.value.to_numpy(), 0.8))
    assert sum(bool(t.showlegend) for t in fig.data) == 4


def test_smoothing_is_applied_before_the_reduction() -> None:
    series = make_series({1: 20_000})
    fig = comparison_figure(series, make_runs([1]), metrics=["train_loss"], smoothing=0.95, max_points=500)
    raw, smooth = fig.data
    full = series[series.key == "train_loss"]
    expected = ema_smooth(full.value.to_numpy(), 0.95)
    assert len(smooth.x) <= 500
    # the kept points are points of the full-resolution smoothed series, not a smoothing of the reduced one
    np.testing.assert_allclose(smooth.y, expected[np.asarray(smooth.x) - 1])
    assert smooth.y[-1] == pytest.approx(expected[-1])


@pytest.mark.parametrize("group", [False, True])
def test_a_window_draws_the_whole_curves_smoothed_values_there(seeds, group) -> None:
    """window=(100, 150): the points there, smoothed from the series' first point (the zoomed view of the whole
    chart), per run and for a group's mean alike."""
    series, runs = seeds
    kw = dict(metrics=["train_loss"], smoothing=0.8, group_by=["batchnorm"] if group else ())
    whole = comparison_figure(series, runs, **kw)
    zoomed = comparison_figure(series, runs, window=(100, 150), **kw)
    kind = "mean" if group else "smoothed"
    for full, part in zip([t for t in whole.data if t.meta["kind"] == kind],
                          [t for t in zoomed.data if t.meta["kind"] == kind]):
        x, y = np.asarray(full.x), np.asarray(full.y)
        inside = (x >= 100) & (x <= 150)
        assert list(part.x) == list(x[inside]) and np.allclose(part.y, y[inside])
    with pytest.raises(ValueError, match="window"):
        comparison_figure(series, runs, window=(150, 100), **kw)


def test_zero_smoothing_has_only_raw_lines(two_runs) -> None:
    series, runs = two_runs
    fig = comparison_figure(series, runs, metrics=["train_loss"], smoothing=0.0)
    assert kinds(fig) == ["raw", "raw"]
    assert all(t.opacity in (None, 1.0) for t in fig.data)


# ---------------------------------------------------------------------- log axes and robust ranges
def test_log_axis_and_non_positive_values_dropped(two_runs) -> None:
    series, runs = two_runs
    series = series.copy()
    series.loc[series.index[:5], "value"] = [0.0, -1.0, -np.inf, np.nan, 0.5]
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], log_y=True)
    assert fig.layout.yaxis.type == "log"
    for t in fig.data:
        y = np.asarray(t.y, dtype=float)
        assert not np.any(y <= 0)
    assert len(fig.data[0].y) == 200 - 3  # 0, -1 and -inf dropped; NaN kept as a gap

    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], log_y=True, layout="metric")
    assert {fig.layout[a].type for a in yaxes(fig)} == {"log"}


def test_robust_y_ignores_a_spike(two_runs) -> None:
    series, runs = two_runs
    series = series.copy()
    series.loc[(series.run_id == 1) & (series.key == "train_loss") & (series.step == 100), "value"] = 1e4
    fig = comparison_figure(series, runs, metrics=["train_loss"], robust_y=True)
    lo, hi = fig.layout.yaxis.range
    assert hi < 10 and lo < 0.1
    assert 1e4 in fig.data[0].y  # the spike is still plotted, just off the range

    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], robust_y=True, log_y=True,
                            layout="metric")
    for a in yaxes(fig):
        lo, hi = fig.layout[a].range
        assert -3 < lo < hi < 1  # log10 units


# ---------------------------------------------------------------------- layouts
def test_layout_metric_has_one_subplot_per_metric(two_runs) -> None:
    series = make_series({1: 100, 2: 100}, per_epoch=("val_loss", "val_acc"))
    runs = two_runs[1]
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss", "val_acc"], layout="metric")
    assert yaxes(fig) == ["yaxis", "yaxis2", "yaxis3"]
    assert [fig.layout[a].title.text for a in yaxes(fig)] == ["train_loss", "val_loss", "val_acc"]
    assert fig.layout.xaxis3.title.text == "step"
    assert len(fig.data) == 6
    assert [t.name for t in fig.data[:3]] == ["run-1"] * 3
    by_axis = {t.yaxis for t in fig.data}
    assert by_axis == {"y", "y2", "y3"}
    # a run is listed once in the legend and toggles in every subplot
    assert sum(bool(t.showlegend) for t in fig.data) == 2
    assert len({t.legendgroup for t in fig.data if t.meta["run_id"] == 1}) == 1


def test_layout_metric_drops_metrics_without_data(two_runs) -> None:
    series, runs = two_runs
    fig = comparison_figure(series, runs, metrics=["train_loss", "nope", "val_loss"], layout="metric")
    assert [fig.layout[a].title.text for a in yaxes(fig)] == ["train_loss", "val_loss"]


def test_layout_field_facets_by_value_and_metric() -> None:
    series = make_series({1: 100, 2: 100, 3: 100})
    runs = make_runs([1, 2, 3], activation=["relu", "elu", "relu"])
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], layout="field",
                            facet_field="activation")
    assert len(yaxes(fig)) == 4  # 2 metrics x 2 activations
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["activation=elu", "activation=relu"]
    cells = {(t.meta["run_id"], t.meta["metric"]): (t.xaxis, t.yaxis) for t in fig.data}
    assert cells[(2, "train_loss")] == ("x", "y")  # elu: first column
    assert cells[(1, "train_loss")] == cells[(3, "train_loss")] == ("x2", "y2")
    assert cells[(1, "val_loss")] == ("x4", "y4")

    one = comparison_figure(series, runs, metrics=["train_loss"], layout="field", facet_field="activation")
    assert len(yaxes(one)) == 2


def test_layout_field_needs_facet_field(two_runs) -> None:
    series, runs = two_runs
    with pytest.raises(ValueError, match="facet_field"):
        comparison_figure(series, runs, metrics=["train_loss"], layout="field")
    with pytest.raises(ValueError, match="facet_field.*activation"):
        comparison_figure(series, runs, metrics=["train_loss"], layout="field", facet_field="nope")


# ---------------------------------------------------------------------- colour and dash
def test_color_by_and_dash_by_share_styles_by_value() -> None:
    series = make_series({1: 50, 2: 50, 3: 50, 4: 50})
    runs = make_runs([1, 2, 3, 4], activation=["elu", "relu", "elu", "relu"], batchnorm=[True, True, False, False])
    fig = comparison_figure(series, runs, metrics=["train_loss"], color_by="activation", dash_by="batchnorm")
    color = {t.meta["run_id"]: t.line.color for t in fig.data}
    dash = {t.meta["run_id"]: t.line.dash for t in fig.data}
    assert color[1] == color[3] != color[2] == color[4]
    assert dash[1] == dash[2] != dash[3] == dash[4]
    titles = {t.legendgrouptitle.text for t in fig.data}
    assert titles == {"activation=elu, batchnorm=true", "activation=relu, batchnorm=true",
                      "activation=elu, batchnorm=false", "activation=relu, batchnorm=false"}
    assert [t.name for t in fig.data] == ["run-1", "run-2", "run-3", "run-4"]


def test_without_color_by_each_run_has_its_own_colour() -> None:
    ids = list(range(1, 6))
    fig = comparison_figure(make_series({i: 30 for i in ids}), make_runs(ids), metrics=["train_loss"])
    assert len({t.line.color for t in fig.data}) == 5


@pytest.mark.parametrize("group", [False, True])
def test_past_ten_lines_the_colours_come_from_a_wider_palette(group) -> None:
    """20 runs (or 20 variants of 2 seeds): 20 colours, not Plotly's ten twice over."""
    ids = list(range(1, 41 if group else 21))
    runs = make_runs(ids, variant=[(i - 1) // 2 for i in ids])
    fig = comparison_figure(make_series({i: 30 for i in ids}), runs, metrics=["train_loss"],
                            group_by=["variant"] if group else ())
    lines = [t for t in fig.data if t.meta["kind"] in ("raw", "mean")]
    assert len(lines) == 20 and len({t.line.color for t in lines}) == 20


def test_many_curves_share_the_figures_points() -> None:
    """300 runs of 3,000 steps, two metrics: each curve reduced further than max_points, the figure holding
    about FIGURE_POINTS in all, each curve at least MIN_CURVE_POINTS; a few runs keep max_points each."""
    from core.presentation.charts import FIGURE_POINTS, MIN_CURVE_POINTS

    ids = list(range(1, 301))
    series = make_series({i: 3000 for i in ids}, per_epoch=(), per_step=("train_loss", "val_loss"))
    fig = comparison_figure(series, make_runs(ids), metrics=["train_loss", "val_loss"])
    sizes = [len(t.x) for t in fig.data if t.meta["kind"] == "raw"]
    assert len(sizes) == 600 and sum(sizes) <= FIGURE_POINTS * 1.05
    assert min(sizes) >= MIN_CURVE_POINTS * 0.9 and max(sizes) <= FIGURE_POINTS // 600 + 10
    few = comparison_figure(series[series["run_id"] <= 3], make_runs([1, 2, 3]), metrics=["train_loss"])
    assert max(len(t.x) for t in few.data) > 1500  # 2,000 a curve, as before


# ---------------------------------------------------------------------- groups
@pytest.fixture
def seeds() -> tuple[pd.DataFrame, pd.DataFrame]:
    # two configs x 3 seeds; seeds of a config stop at different steps, so the grid needs interpolation
    lengths = {1: 300, 2: 280, 3: 250, 4: 300, 5: 300, 6: 300}
    series = make_series(lengths)
    runs = make_runs(list(lengths), batchnorm=[True] * 3 + [False] * 3, activation=["elu"] * 3 + ["relu"] * 3,
                     seed=[0, 1, 2] * 2)
    return series, runs


def test_group_by_gives_one_mean_and_one_band_per_group(seeds) -> None:
    series, runs = seeds
    fig = comparison_figure(series, runs, metrics=["train_loss"], group_by=["batchnorm", "activation"],
                            max_points=200)
    assert kinds(fig) == ["band", "mean", "band", "mean"]
    means = [t for t in fig.data if t.meta["kind"] == "mean"]
    # the elu seeds stop at steps 300, 280 and 250: one is left at the right end ("n=3→1")
    assert [t.name for t in means] == ["batchnorm=false, activation=relu (n=3)",
                                       "batchnorm=true, activation=elu (n=3→1)"]
    # each point's hover says how many runs its mean is over (as the band counts them)
    elu = means[1]
    np.testing.assert_array_equal(elu.customdata, np.where(elu.x <= 250, 3, np.where(elu.x <= 280, 2, 1)))
    assert "of %{customdata} of 3 runs" in elu.hovertemplate
    assert set(means[0].customdata) == {3}
    assert means[1].meta["run_ids"] == [1, 2, 3] and means[1].meta["run_id"] is None
    bands = [t for t in fig.data if t.meta["kind"] == "band"]
    assert all(t.fill == "toself" and t.showlegend is False for t in bands)
    assert bands[1].legendgroup == means[1].legendgroup

    # the mean is numpy's mean of the aligned (interpolated) runs
    pairs = []
    for rid in (1, 2, 3):
        rows = series[(series.run_id == rid) & (series.key == "train_loss")]
        pairs.append((rows.step.to_numpy(), rows.value.to_numpy()))
    grid, matrix = align(pairs, n_grid=100)  # max_points // 2
    assert grid[-1] == 300
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(means[1].x, grid)
        np.testing.assert_allclose(means[1].y, np.nanmean(matrix, axis=0))
        std = np.nanstd(matrix, axis=0, ddof=1)
    mean = np.nanmean(matrix, axis=0)
    std[np.sum(~np.isnan(matrix), axis=0) == 1] = 0.0  # after step 280 one seed is left: no spread
    np.testing.assert_allclose(bands[1].y, np.r_[mean + std, (mean - std)[::-1]])
    np.testing.assert_allclose(bands[1].x, np.r_[grid, grid[::-1]])


def test_group_by_with_smoothing_and_several_metrics(seeds) -> None:
    series, runs = seeds
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], group_by=["batchnorm"],
                            smoothing=0.6, band="minmax")
    means = [t for t in fig.data if t.meta["kind"] == "mean"]
    assert [t.name for t in means] == ["batchnorm=false (n=3) · train_loss", "batchnorm=false (n=3) · val_loss",
                                       "batchnorm=true (n=3→1) · train_loss", "batchnorm=true (n=3→1) · val_loss"]
    # val_loss: shared epochs within a group -> the grid is the epochs' steps, smoothing applied per run first
    val = means[1]
    smoothed = [ema_smooth(series[(series.run_id == r) & (series.key == "val_loss")].value.to_numpy(), 0.6)
                for r in (4, 5, 6)]
    np.testing.assert_allclose(val.y, np.mean(smoothed, axis=0))


def test_group_by_adds_color_field_and_facet(seeds) -> None:
    series, runs = seeds
    fig = comparison_figure(series, runs, metrics=["train_loss"], group_by=["seed"], color_by="activation",
                            layout="field", facet_field="batchnorm")
    means = [t for t in fig.data if t.meta["kind"] == "mean"]
    assert len(means) == 6  # seed x activation (= batchnorm) groups of one run
    assert all("activation=" in t.name and "(n=1)" in t.name for t in means)
    colors = {t.name.split("activation=")[1].split(",")[0]: t.line.color for t in means}
    assert colors["elu"] != colors["relu"]


def test_group_with_a_diverged_seed_does_not_crash(seeds) -> None:
    series, runs = seeds
    series = series.copy()
    bad = (series.run_id == 2) & (series.step > 100)
    series.loc[bad, "value"] = np.nan
    series.loc[(series.run_id == 3) & (series.step == 50), "value"] = np.inf
    fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], group_by=["batchnorm"],
                            band="ci95", log_y=True, robust_y=True)
    assert kinds(fig).count("mean") == 4
    json.loads(fig.to_json())


# ---------------------------------------------------------------------- size bound and robustness
def test_no_trace_holds_more_than_max_points_plus_a_few() -> None:
    series = make_series({1: 20_000, 2: 20_000, 3: 20_000})
    series.loc[series.index[[500, 9000]], "value"] = np.nan  # run 1 train_loss: two isolated NaNs
    runs = make_runs([1, 2, 3], batchnorm=[True, True, False])
    for kwargs in ({}, {"smoothing": 0.9}, {"group_by": ["batchnorm"]}, {"layout": "metric", "log_y": True},
                   {"x": "time", "robust_y": True}):
        fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], max_points=1000, **kwargs)
        assert fig.data
        assert max(len(t.x) for t in fig.data) <= 1000 + 10, kwargs
    fig = comparison_figure(series, runs, metrics=["train_loss"], max_points=1000)
    y = np.asarray(fig.data[0].y, dtype=float)
    assert np.isnan(y).sum() == 2  # the NaNs survive the reduction


def test_nan_and_inf_input_does_not_crash(two_runs) -> None:
    series, runs = two_runs
    series = series.copy()
    series.loc[series.index[10:20], "value"] = np.nan
    series.loc[series.index[30], "value"] = np.inf
    series.loc[series.index[31], "value"] = -np.inf
    series.loc[series.run_id == 2, "value"] = np.nan  # run 2: nothing but NaN
    for kwargs in ({}, {"smoothing": 0.9}, {"log_y": True, "robust_y": True}, {"group_by": ["seed"]},
                   {"layout": "metric", "robust_y": True}, {"x": "epoch"}):
        fig = comparison_figure(series, runs, metrics=["train_loss", "val_loss"], **kwargs)
        json.loads(fig.to_json())
    fig = comparison_figure(series, runs, metrics=["train_loss"])
    assert np.isnan(np.asarray(fig.data[0].y[10:20], dtype=float)).all()
    assert np.inf in list(fig.data[0].y)


def test_a_run_without_rows_for_a_metric_is_skipped() -> None:
    series = make_series({1: 50, 2: 50})
    series = series[~((series.run_id == 2) & (series.key == "val_loss"))]
    fig = comparison_figure(series, make_runs([1, 2, 3]), metrics=["train_loss", "val_loss"])
    assert [(t.meta["run_id"], t.meta["metric"]) for t in fig.data] == [
        (1, "train_loss"), (1, "val_loss"), (2, "train_loss")]


@pytest.mark.parametrize("case", ["no_metric_rows", "no_runs", "no_metrics", "empty_series"])
def test_empty_selection_shows_an_annotation(two_runs, case: str) -> None:
    series, runs = two_runs
    metrics = ["train_loss"]
    if case == "no_metric_rows":
        metrics = ["grad_norm/fc0"]
    elif case == "no_runs":
        runs = runs.iloc[:0]
    elif case == "no_metrics":
        metrics = []
    else:
        series = series.iloc[:0]
    fig = comparison_figure(series, runs, metrics=metrics, title="t")
    assert len(fig.data) == 0
    assert [a.text for a in fig.layout.annotations] == [EMPTY_MESSAGE]
    assert fig.layout.title.text == "t"


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"x": "steps"}, "x"),
    ({"layout": "grid"}, "layout"),
    ({"band": "iqr"}, "band"),
    ({"smoothing": 1.0}, "smoothing"),
    ({"smoothing": -0.5}, "smoothing"),
    ({"color_by": "colour"}, "color_by"),
    ({"dash_by": "nope"}, "dash_by"),
    ({"group_by": ["seed", "nope"]}, "group_by"),
    ({"max_points": 2}, "max_points"),
    ({"metrics": [1]}, "metrics"),
    ({"log_y": "yes"}, "log_y"),
])
def test_bad_arguments_raise_value_error_naming_them(two_runs, kwargs: dict, word: str) -> None:
    series, runs = two_runs
    args = {"metrics": ["train_loss"], **kwargs}
    with pytest.raises(ValueError, match=word):
        comparison_figure(series, runs, **args)


def test_series_without_required_columns_is_refused(two_runs) -> None:
    series, runs = two_runs
    with pytest.raises(ValueError, match="series.*wall_time"):
        comparison_figure(series.drop(columns="wall_time"), runs, metrics=["train_loss"])


# ---------------------------------------------------------------------- run_figure
def test_run_figure_small_multiples() -> None:
    keys = ("grad_norm/fc10", "grad_norm/fc2", "train_loss", "clamp_frac")
    series = make_series({7: 5000}, per_step=keys, per_epoch=("val_loss",))
    fig = run_figure(series, run_name="run-7", max_points=400)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["clamp_frac", "grad_norm/fc2", "grad_norm/fc10", "train_loss", "val_loss"]
    assert len(fig.data) == 5 and len(yaxes(fig)) == 5
    assert all(len(t.x) <= 400 for t in fig.data)
    assert [t.meta["metric"] for t in fig.data] == titles
    assert {t.meta["run_id"] for t in fig.data} == {7}
    assert fig.layout.title.text == "run-7"
    # every x axis follows the first; the first itself does not (Plotly drops a self-match with a console warning)
    assert fig.layout.xaxis.matches is None
    assert {fig.layout[f"xaxis{i}"].matches for i in range(2, 6)} == {"x"}

    picked = run_figure(series, run_name="run-7", keys=["val_loss", "train_loss", "missing"], cols=1)
    assert [a.text for a in picked.layout.annotations] == ["val_loss", "train_loss"]
    assert picked.layout.xaxis2.title.text == "step"


def test_run_figure_centres_a_constant_metric_on_its_value() -> None:
    """lr 0.01 at every step: its axis runs 0.005 to 0.015, not from -0.5 (where 0.01 reads as 0); 0 gets -1 to 1,
    and a metric that moves keeps Plotly's own range."""
    series = make_series({7: 50}, per_step=("train_loss",), per_epoch=())
    flat = series.assign(key="lr", value=0.01)
    zero = series.assign(key="stuck_update_frac", value=0.0)
    zero.loc[zero.index[3], "value"] = np.nan  # a NaN does not make it move
    fig = run_figure(pd.concat([series, flat, zero]), run_name="r", keys=["lr", "stuck_update_frac", "train_loss"])
    assert list(fig.layout.yaxis.range) == pytest.approx([0.005, 0.015])
    assert list(fig.layout.yaxis2.range) == [-1.0, 1.0] and fig.layout.yaxis3.range is None


def test_run_figure_refuses_several_runs_and_handles_empty() -> None:
    series = make_series({1: 20, 2: 20})
    with pytest.raises(ValueError, match="series"):
        run_figure(series, run_name="x")
    fig = run_figure(series.iloc[:0], run_name="x")
    assert [a.text for a in fig.layout.annotations] == [EMPTY_MESSAGE]


# ---------------------------------------------------------------------- diff_table
def test_diff_table_keeps_only_differing_columns() -> None:
    runs = make_runs([1, 2, 3], dataset=["moons"] * 3, hidden=["64x64", "64x64", "none"],
                     clamp_eps=[None, np.nan, None], lr=[0.01, 0.01, 0.001], seed=[0, 1, 2],
                     batchnorm=[True, True, True])
    table = diff_table(runs)
    assert list(table.columns) == ["name", "hidden", "lr", "seed"]
    assert list(table.index) == [1, 2, 3]
    assert list(diff_table(runs.iloc[:1]).columns) == ["name"]


# ---------------------------------------------------------------------- NaN and Inf as markers
def test_nan_and_inf_are_drawn_as_markers_and_a_divergence_marks_its_last_finite_point():
    series = pd.DataFrame({"run_id": [1] * 6, "key": ["train_loss"] * 6, "step": [1, 2, 3, 4, 5, 6],
                           "epoch": [0] * 6, "value": [0.9, np.nan, 0.7, 0.5, np.inf, np.nan],
                           "wall_time": [0.1 * i for i in range(6)]})
    runs = pd.DataFrame({"name": ["#1 diverged"]}, index=pd.Index([1], name="run_id"))
    fig = comparison_figure(series, runs, metrics=["train_loss"])
    (marks,) = [t for t in fig.data if t.meta["kind"] == "nonfinite"]
    assert list(marks.x) == [2, 5, 6] and list(marks.text) == ["NaN", "+Inf", "NaN"]
    assert list(marks.y) == [0.9, 0.9, 0.5]  # NaN at the value before it, +Inf at the top finite value
    assert list(marks.marker.symbol) == ["x", "triangle-up", "x"] and marks.showlegend is False
    (star,) = [t for t in fig.data if t.meta["kind"] == "last_finite"]
    assert (list(star.x), list(star.y)) == ([4], [0.5])  # where the divergence began
    assert marks.legendgroup == star.legendgroup == next(t for t in fig.data if t.meta["kind"] == "raw").legendgroup
    single = run_figure(series, run_name="diverged")
    assert [t.meta["kind"] for t in single.data] == ["raw", "nonfinite", "last_finite"]


def test_a_finite_curve_gets_no_markers():
    series = pd.DataFrame({"run_id": [1] * 3, "key": ["loss"] * 3, "step": [1, 2, 3], "epoch": [0] * 3,
                           "value": [3.0, 2.0, 1.0], "wall_time": [0.0, 1.0, 2.0]})
    runs = pd.DataFrame({"name": ["#1 fine"]}, index=pd.Index([1], name="run_id"))
    assert {t.meta["kind"] for t in comparison_figure(series, runs, metrics=["loss"]).data} == {"raw"}


def test_a_run_that_diverged_outside_the_plotted_metric_gets_its_star_where_it_stopped():
    """The NaN was in a gradient: the loss curve stayed finite and just ends. The star marks its last point."""
    series = pd.DataFrame({"run_id": [1] * 3 + [2] * 3, "key": ["loss"] * 6, "step": [1, 2, 3] * 2,
                           "epoch": [0] * 6, "value": [3.0, 2.0, 5.0, 3.0, 2.0, 1.0], "wall_time": [0.0] * 6})
    runs = pd.DataFrame({"name": ["#1 diverged", "#2 fine"]}, index=pd.Index([1, 2], name="run_id"))
    fig = comparison_figure(series, runs, metrics=["loss"], diverged={1})
    (star,) = [t for t in fig.data if t.meta["kind"] == "last_finite"]
    assert star.meta["run_id"] == 1 and (list(star.x), list(star.y)) == ([3], [5.0])
    assert "before the run diverged" in star.hovertemplate
    assert not [t for t in fig.data if t.meta["kind"] == "nonfinite"]
    assert {t.meta["kind"] for t in comparison_figure(series, runs, metrics=["loss"]).data} == {"raw"}
