"""How many seeds: the smallest difference a study's seeds could detect, and the seeds a named difference needs.

Both answer for the test the study's intervals use: the paired t-test over seeds (one difference per seed, see
`core.analysis.effects`), two-sided, at alpha = 0.05, with 80% power. The assumptions, stated once:
- the per-seed differences are independent and normally distributed around the true difference;
- their standard deviation is the one this study measured (`sd`, ddof=1) - an estimate from few seeds, so the
  answers are planning figures, not guarantees;
- the same sd holds for the larger number of seeds asked about.

The power of n seeds against a true difference delta is exact under those assumptions: the t statistic follows
a noncentral t distribution with n - 1 degrees of freedom and noncentrality delta * sqrt(n) / sd, so

    power = P(T > t_crit) + P(T < -t_crit),   t_crit = t(1 - alpha/2, n - 1)        (scipy.stats.nct, t)

(the lower tail is computed as the upper tail at -noncentrality: scipy's `nct.cdf` returns NaN far in that tail.)

The detectable difference solves power = 0.8 for delta (Brent's method on the noncentrality); the seeds needed
are the smallest n >= 2 whose power reaches 0.8.
"""

from __future__ import annotations

import math

ALPHA = 0.05
POWER = 0.80
MAX_SEEDS_ASKED = 1_000_000  # beyond this the answer is "more than a million"


def power(n: int, difference: float, sd: float, *, alpha: float = ALPHA) -> float:
    """The chance that the paired t-test over `n` seeds finds a true `difference` (per-seed sd `sd`)."""
    from scipy import stats  # noqa: PLC0415 - keeps `python -m core` start-up free of scipy

    if n < 2 or not math.isfinite(sd) or not math.isfinite(difference):
        return math.nan
    if sd == 0:
        return 1.0 if difference != 0 else alpha
    df = n - 1
    return _power(float(stats.t.ppf(1 - alpha / 2, df)), df, abs(difference) * math.sqrt(n) / sd)


def _power(crit: float, df: int, nc: float) -> float:
    from scipy import stats  # noqa: PLC0415

    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def detectable_difference(n: int, sd: float, *, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest true difference that `n` seeds find with probability `target` (NaN below 2 seeds or without
    a finite sd; 0 when the per-seed differences do not vary)."""
    from scipy import optimize, stats  # noqa: PLC0415

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def gap(nc: float) -> float:
        return _power(crit, df, nc) - target

    high = crit + 10.0
    while gap(high) < 0:
        high *= 2
    nc = optimize.brentq(gap, 0.0, high, xtol=1e-10)
    return nc * sd / math.sqrt(n)


def seeds_needed(difference: float, sd: float, *, alpha: float = ALPHA, target: float = POWER) -> float:
    """The fewest seeds (>= 2) whose paired t-test finds a true `difference` with probability `target`, for a
    per-seed sd `sd`; inf for a difference of 0 or more than `MAX_SEEDS_ASKED` seeds, NaN without a finite sd."""
    if not math.isfinite(sd) or not math.isfinite(difference):
        return math.nan
    if difference == 0:
        return math.inf
    if sd == 0:
        return 2
    low, high = 1, 2  # power(low) < target <= power(high), found by doubling, then bisected
    while power(high, difference, sd, alpha=alpha) < target:
        low, high = high, high * 2
        if high > MAX_SEEDS_ASKED:
            return math.inf
    while high - low > 1:
        mid = (low + high) // 2
        if power(mid, difference, sd, alpha=alpha) >= target:
            high = mid
        else:
            low = mid
    return high
