"""The loss-curve shape numbers the trainer puts in the summary, on hand-made curves."""

import math
import warnings

import numpy as np
import pytest

from core.training.curves import (SPIKE_ABOVE, SPIKE_RATIO, SPIKE_WINDOW, nan_medians, curve_stats, oscillation,
                                  spikes, spikes_rows)


def test_oscillation_is_zero_for_a_monotone_curve_and_counts_back_and_forth_travel():
    assert oscillation([1.0, 0.8, 0.5, 0.4]) == 0.0
    assert oscillation([0.4, 0.6, 0.9]) == 0.0  # rising steadily (overfitting) is not oscillating
    # up 1 and back 1 around a median of 1: travelled once its level
    assert oscillation([1.0, 2.0, 1.0]) == pytest.approx(1.0)
    # a loss jittering near zero is measured against the 0.1 floor, not against 0.001
    assert oscillation([0.001, 0.01, 0.001]) == pytest.approx(0.009 / 0.1)
    assert math.isnan(oscillation([1.0, 2.0]))


def test_spikes_against_the_median_of_the_steps_before():
    calm = np.full(40, 0.3)
    assert spikes(calm) == 0
    spiky = calm.copy()
    spiky[[25, 30]] = [1.3, 0.8]  # 1.3 is 4.3x and +1.0: a spike; 0.8 is 2.7x: not
    assert spikes(spiky) == 1
    low = np.full(40, 0.01)
    low[30] = 0.2  # 20x, but only +0.19: no spike
    assert spikes(low) == 0
    bad = calm.copy()
    bad[35] = math.inf
    assert spikes(bad) == 1
    assert spikes(np.full(10, 0.3)) == 0  # too short to judge


def test_spikes_rows_count_what_the_definition_counts_step_by_step():
    """`spikes_rows` takes medians only where a step could spike; it must count what the definition does, a step
    at a time against `np.nanmedian` of the window before it: noisy curves with jumps, NaN, infinities and
    negative values, windows of NaN only."""
    rng = np.random.default_rng(11)
    rows = np.abs(rng.normal(0.5, 0.3, size=(40, 90)))
    jumps = rng.random(rows.shape) < 0.05
    rows[jumps] *= rng.choice([3.0, 5.0, 20.0], size=int(jumps.sum()))
    rows[rng.random(rows.shape) < 0.02] = np.nan
    rows[rng.random(rows.shape) < 0.01] = np.inf
    rows[3] -= 2.0  # negative: a median below zero
    rows[4, 10:40] = np.nan  # windows of NaN only, then a step after them
    rows[5] = 0.01
    rows[5, 50] = 0.6  # 60x and +0.59: a spike over a calm curve

    def by_definition(row: np.ndarray) -> int:
        count = 0
        for i in range(SPIKE_WINDOW, len(row)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window
                ref = np.nanmedian(row[i - SPIKE_WINDOW:i])
            count += bool(not np.isfinite(row[i]) or (row[i] > SPIKE_RATIO * ref and row[i] > ref + SPIKE_ABOVE))
        return count

    expected = [by_definition(row) for row in rows]
    assert spikes_rows(rows).tolist() == expected
    assert expected[5] == 1 and sum(expected) > 40  # the test data has spikes to find


def test_curve_stats_plateau_tail_and_missing_values():
    out = curve_stats([0.70, 0.69, 0.69], [0.7, 0.6, 0.4], np.full(30, 0.69))
    assert out["train_loss_drop"] == pytest.approx(1 - 0.69 / 0.70)
    assert out["val_loss_tail_drop"] == pytest.approx((1 - 0.4 / 0.7) / 2)
    assert out["val_loss_tail_fall"] == pytest.approx(0.15)
    assert out["loss_spikes"] == 0
    assert curve_stats([], [], np.zeros(0)) == {"loss_spikes": 0}


def test_the_spike_reference_is_numpys_nanmedian():
    """`spikes` takes its window medians without numpy's slow masked path; they must be numpy's, bit for bit:
    odd and even counts of finite values and widths, NaN-only rows, rows without NaN, infinities on either side."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        rows = rng.normal(size=(int(rng.integers(1, 40)), int(rng.integers(1, 24)))) * 10.0 ** int(rng.integers(-6, 6))
        rows[rng.random(rows.shape) < rng.choice([0.0, 0.1, 0.5, 1.0])] = np.nan
        rows[rng.random(rows.shape) < 0.05] = np.inf
        rows[rng.random(rows.shape) < 0.05] = -np.inf
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns of an all-NaN row
            expected = np.nanmedian(rows, axis=1)
        assert np.array_equal(nan_medians(rows), expected, equal_nan=True)
