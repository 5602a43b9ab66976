"""Zooming into a range of steps: what a box selection means, typed ranges checked, and the Compare page and a
run's view reading a long run sized to the chart, then a zoomed range at full resolution, then the whole run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import PROJECT_ROOT
from core.presentation import zoom
from core.store import Store
from core.training.reporting import MetricBatch

APP = str(PROJECT_ROOT / "app.py")
STEPS = 30_000


def test_a_box_selection_is_a_range_of_whole_steps():
    assert zoom.selected_steps({"box": [{"x": [1200.4, 350.2], "y": [0, 1]}], "points": []}) == (350, 1201)
    assert zoom.selected_steps({"box": [], "points": [{"x": 3}]}) is None
    assert zoom.selected_steps({"box": [{"x": [5.2, 5.7]}]}) == (5, 6)
    assert zoom.selected_steps({"box": [{"y": [0, 1]}]}) is None
    assert zoom.selected_steps(None) is None


@pytest.mark.parametrize("first, last, message", [(10, 10, "later one"), (-5, 3, "step >= 0"), ("a", 3, "whole")])
def test_a_bad_typed_range_says_what_is_wrong(first, last, message):
    with pytest.raises(ValueError, match=message):
        zoom.check_range(first, last)


def test_smoothing_reads_every_point():
    assert zoom.read_points(0.0) == zoom.READ_POINTS and zoom.read_points(0.6) is None


@pytest.fixture
def long_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, np.ndarray]:
    url = f"sqlite:///{tmp_path / 'long.db'}"
    values = np.exp(-np.linspace(0, 5, STEPS)) + 0.01 * np.random.default_rng(0).standard_normal(STEPS)
    values[12_345] = math.nan
    with Store(url) as store:
        run_id = store.create_run(name="long", config={})
        for first in range(0, STEPS, 1000):
            batch = MetricBatch()
            steps = list(range(first + 1, first + 1001))
            batch.add_series("train_loss", steps, [s // 500 for s in steps], values[first:first + 1000].tolist(),
                             [s * 1e-3 for s in steps])
            store.log_metrics(run_id, batch)
        store.finish_run(run_id, status="finished", summary={"steps": STEPS})
    monkeypatch.setenv("LOSSBOARD_DB", url)
    return url, values


def raw_trace(at: AppTest) -> dict:
    (chart,) = at.get("plotly_chart")
    return next(t for t in json.loads(chart.proto.spec)["data"] if t["meta"]["kind"] == "raw")


def numbers(data) -> list[float]:
    """Plotly's JSON holds arrays as typed buffers ({"dtype", "bdata"}) or lists."""
    if isinstance(data, dict):
        import base64
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"])).tolist()
    return list(data)


def test_compare_reads_sized_to_the_chart_then_a_zoomed_range_in_full(long_run):
    _, values = long_run
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["runs"] = "1"
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    xs = numbers(raw_trace(at)["x"])
    assert len(xs) <= zoom.READ_POINTS + 10 and xs[0] == 1 and xs[-1] == STEPS  # the whole run, reduced
    assert 12_346 in xs  # the NaN's step is kept
    assert any("reduced to its shape" in c.value for c in at.caption)
    at.number_input(key="compare_zoom_first").set_value(10_001)
    at.number_input(key="compare_zoom_last").set_value(11_000)
    at.button(key="compare_zoom_apply").click().run()
    zoomed = numbers(raw_trace(at)["x"])
    assert zoomed == list(range(10_001, 11_001))  # every point of the range, from the store
    assert len(zoomed) > sum(10_001 <= x <= 11_000 for x in xs)  # more than the overview had there
    assert any(c.value.startswith("Steps 10,001 to 11,000, every point") for c in at.caption)
    at.button(key="compare_whole_run").click().run()
    assert numbers(raw_trace(at)["x"]) == xs
    at.number_input(key="compare_zoom_first").set_value(STEPS + 1_000)  # past the end: said where the run ends
    at.number_input(key="compare_zoom_last").set_value(STEPS + 2_000)
    at.button(key="compare_zoom_apply").click().run()
    assert not at.exception
    assert f"these runs end by step {STEPS:,}" in " ".join(i.value for i in at.info)
    assert not [c for c in at.caption if c.value.startswith("Steps")]  # not "every point" of an empty range


def test_a_smoothed_zoom_shows_the_whole_curves_smoothed_values(long_run):
    """Smoothing 0.9, zoomed to steps 10,001-11,000: the smoothed values there are those of the whole run's EMA
    (TensorBoard's: zooming never changes them), not an EMA restarted at the zoom's left edge."""
    from core.analysis.series import ema_smooth

    _, values = long_run
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["runs"] = "1"
    at.run()
    at.switch_page("pages/compare.py").run()
    at.slider(key="compare_opt_smoothing").set_value(0.9).run()
    at.number_input(key="compare_zoom_first").set_value(10_001)
    at.number_input(key="compare_zoom_last").set_value(11_000)
    at.button(key="compare_zoom_apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (chart,) = at.get("plotly_chart")
    smoothed = next(t for t in json.loads(chart.proto.spec)["data"] if t["meta"]["kind"] == "smoothed")
    xs, ys = numbers(smoothed["x"]), numbers(smoothed["y"])
    assert xs[0] == 10_001 and xs[-1] == 11_000
    whole = ema_smooth(values, 0.9)
    assert ys == pytest.approx(whole[10_000:11_000].tolist())
    assert abs(ys[0] - values[10_000]) > 1e-4  # a restarted EMA would start at the raw value


def test_a_box_dragged_on_the_chart_zooms(long_run):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["runs"] = "1"
    at.run()
    at.switch_page("pages/compare.py").run()
    version = at.session_state["compare_zoom_version"]
    at.session_state[f"compare_chart_{version}"] = {"selection": {"box": [{"x": [2000.2, 2499.6]}], "points": []}}
    at.run()
    assert numbers(raw_trace(at)["x"]) == list(range(2000, 2501))
    assert at.session_state["compare_zoom_version"] == version + 1  # a fresh chart: the box does not stick


def test_a_runs_view_reads_sized_to_the_chart_and_zooms_by_a_box(long_run):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = "1"
    at.run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    xs = numbers(raw_trace(at)["x"])
    assert len(xs) <= zoom.READ_POINTS + 10 and (xs[0], xs[-1]) == (1, STEPS)
    at.session_state["runs_metrics_1_0"] = {"selection": {"box": [{"x": [29_000.5, 29_400]}], "points": []}}
    at.run()
    assert numbers(raw_trace(at)["x"]) == list(range(29_000, 29_401))
    at.button(key="runs_whole_run_1").click().run()
    assert numbers(raw_trace(at)["x"]) == xs


def test_zoom_keys_apply_a_box_once_and_reset_on_a_fresh_chart():
    keys = zoom.ZoomKeys(steps="z", version="v", chart="c")
    state: dict = {}
    assert keys.current(state) is None and keys.chart_key(state) == "c_0"
    state["c_0"] = {"selection": {"box": [{"x": [10.5, 20.2]}]}}
    assert keys.current(state) == (10, 21) and keys.chart_key(state) == "c_1"
    assert keys.current(state) == (10, 21) and state["v"] == 1  # the new chart has no box: nothing applied again
    keys.set(state, None)
    assert keys.current(state) is None and keys.chart_key(state) == "c_2"
