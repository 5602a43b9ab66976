"""The reliability chart of the run view, from a stored summary."""

from core.presentation.calibration import calibration_data, calibration_figure

SUMMARY = {"final_val_ece": 0.0425, "calibration": {"predicted": [0.05, 0.5, 0.93], "observed": [0.0, 0.6, 1.0],
                                                    "count": [40, 10, 50]}}


def test_the_figure_draws_the_diagonal_and_the_curve_sized_by_samples():
    fig = calibration_figure(SUMMARY)
    diagonal, curve = fig.data
    assert diagonal.meta == {"kind": "diagonal"} and list(diagonal.x) == [0, 1]
    assert curve.meta == {"kind": "reliability"}
    assert list(curve.x) == [0.05, 0.5, 0.93] and list(curve.y) == [0.0, 0.6, 1.0]
    assert list(curve.customdata) == [40, 10, 50]
    assert curve.marker.size[2] == 20 and curve.marker.size[1] < curve.marker.size[0] < 20
    assert fig.layout.title.text == "Reliability on validation (ECE 0.043)"
    assert tuple(fig.layout.xaxis.range) == (0, 1)


def test_runs_without_a_curve_get_none():
    assert calibration_figure({}) is None
    assert calibration_data({"calibration": {"predicted": [], "observed": [], "count": []}}) is None
    assert calibration_data({"calibration": {"predicted": [0.1], "observed": [0.2, 0.3], "count": [1]}}) is None
    assert calibration_data({"calibration": "bad"}) is None
