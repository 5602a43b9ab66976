"""Many comparisons at once: Holm's correction of p-values for the number of effects shown.

A study of three fields shows 3 main effects and 3 interactions; at 5% each, about one in three such studies
would show a "clear" effect that is noise. Holm's step-down procedure keeps the chance of any false "clear" among
the m effects at 5%, and is never less powerful than Bonferroni. With the m finite p-values sorted,
p(1) <= ... <= p(m):

    adjusted p(i) = max over j <= i of min(1, (m - j + 1) * p(j))

and each adjusted value goes back to its effect's place. NaN p-values (an effect that cannot be judged yet) stay
NaN and do not count in m. An effect is clear after the correction when its adjusted p is below 0.05.

Written out here (ten lines) rather than taken from statsmodels' `multipletests`, which would be a new dependency
for this one function; scipy has no Holm correction.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, in the order given (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def family_size(p_values: Sequence[float] | np.ndarray) -> int:
    """How many p-values the correction counts (the finite ones)."""
    return int(np.isfinite(np.asarray(p_values, dtype=float)).sum())
