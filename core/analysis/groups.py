"""Two groups of runs compared on one summary number: the difference of their means with a Welch t interval.

The runs of two groups are not paired (different configs, seeds or tags, any number of runs in each), so the
interval is Welch's: with means m_a, m_b, sample variances v_a, v_b (ddof=1) and sizes n_a, n_b,

    difference = m_b - m_a
    se         = sqrt(v_a / n_a + v_b / n_b)
    df         = se^4 / ((v_a / n_a)^2 / (n_a - 1) + (v_b / n_b)^2 / (n_b - 1))      (Welch-Satterthwaite)
    95% CI     = difference +- t(0.975, df) * se

with the two-sided p of Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`). Runs without a finite value
are left out; each group needs two values for an interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class GroupDifference:
    """B minus A, with Welch's 95% interval (NaN where a group has fewer than two values)."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    difference: float
    ci_low: float
    ci_high: float
    df: float
    p_value: float

    @property
    def clear(self) -> bool:
        return math.isfinite(self.ci_low) and (self.ci_low > 0 or self.ci_high < 0)


def welch_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> GroupDifference:
    """Group B's mean minus group A's, with Welch's t interval and p (see the module docstring)."""
    x, y = _finite(a), _finite(b)
    mean_a = float(x.mean()) if x.size else math.nan
    mean_b = float(y.mean()) if y.size else math.nan
    sd_a = float(x.std(ddof=1)) if x.size > 1 else math.nan
    sd_b = float(y.std(ddof=1)) if y.size > 1 else math.nan
    low = high = df = p = math.nan
    if x.size > 1 and y.size > 1:
        va, vb = sd_a ** 2 / x.size, sd_b ** 2 / y.size
        se = math.sqrt(va + vb)
        if se > 0:
            from scipy import stats  # noqa: PLC0415 - keeps `python -m core` start-up free of scipy

            df = (va + vb) ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1))
            half = float(stats.t.ppf(0.975, df)) * se
            low, high = mean_b - mean_a - half, mean_b - mean_a + half
            p = float(stats.ttest_ind(y, x, equal_var=False).pvalue)
        else:  # no spread in either group: the difference is exact
            low = high = mean_b - mean_a
            p = 0.0 if mean_b != mean_a else 1.0
    return GroupDifference(n_a=int(x.size), n_b=int(y.size), mean_a=mean_a, mean_b=mean_b, sd_a=sd_a, sd_b=sd_b,
                           difference=mean_b - mean_a, ci_low=low, ci_high=high, df=df, p_value=p)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]
