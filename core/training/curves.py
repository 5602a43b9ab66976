"""The shape of a run's loss curves in a few numbers, computed once when the run ends: how far the training loss
fell, how much it went back and forth, whether it was still falling at the end, and how many steps spiked.

They go into the run summary, so that findings about plateaus, oscillation and spikes read numbers, not series.
"""

from __future__ import annotations

import math

import numpy as np

SPIKE_WINDOW = 20  # a step spikes against the median of this many logged steps before it
SPIKE_RATIO = 4.0  # ... when its loss is this many times that median
SPIKE_ABOVE = 0.5  # ... and at least this much above it (a loss of 0.01 next to 0.002 is no spike)
LEVEL_FLOOR = 0.1  # oscillation is measured against a level of at least this much loss (nats)


def oscillation(values: list[float]) -> float:
    """How much a curve goes back and forth, relative to its level: (total variation - net change) / 2, over the
    median value (at least LEVEL_FLOOR, so that a loss jittering around 0.001 does not count as wild). 0 for a
    monotone curve; 1 when it travels, up and then back, once its typical value."""
    x = [v for v in values if math.isfinite(v)]
    if len(x) < 3:
        return math.nan
    size = sorted(abs(v) for v in x)  # in Python: a run's epochs are few, and a population ends hundreds at once
    half = len(size) // 2
    level = max(size[half] if len(size) % 2 else (size[half - 1] + size[half]) / 2, LEVEL_FLOOR)
    wasted = (sum(abs(b - a) for a, b in zip(x, x[1:])) - abs(x[-1] - x[0])) / 2
    return float(wasted / level)


def spikes(losses: np.ndarray) -> int:
    """Logged steps whose loss is SPIKE_RATIO times the median of the SPIKE_WINDOW steps before, and at least
    SPIKE_ABOVE above it. A non-finite loss is a spike too."""
    return int(spikes_rows(np.asarray(losses, dtype=np.float64)[None])[0])


def spikes_rows(losses: np.ndarray) -> np.ndarray:
    """`spikes` of every row of `losses` (runs, steps), in one pass."""
    x = np.asarray(losses, dtype=np.float64)
    rows, n = x.shape
    if n <= SPIKE_WINDOW:
        return np.zeros(rows, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(x[:, :-1], SPIKE_WINDOW, axis=1)
    later = x[:, SPIKE_WINDOW:]
    with np.errstate(invalid="ignore"):
        # A window's median is at least its smallest value (NaN aside), so only a step above SPIKE_RATIO times that
        # and SPIKE_ABOVE over it can spike: the medians are taken for those windows only (few, or none)
        low = np.fmin.reduce(windows, axis=2)
        maybe = (later > SPIKE_RATIO * low) & (later > low + SPIKE_ABOVE)
        hit = ~np.isfinite(later)
        if maybe.any():
            reference = nan_medians(windows[maybe])
            seen = later[maybe]
            hit[maybe] |= (seen > SPIKE_RATIO * reference) & (seen > reference + SPIKE_ABOVE)
    return hit.sum(axis=1)


def nan_medians(rows: np.ndarray) -> np.ndarray:
    """`np.nanmedian(rows, axis=1)` (NaN for a row of NaN only), without its masked-array path for short rows,
    several times slower: each row sorted (NaN last), the mean of its middle finite value or two."""
    ordered = np.sort(rows, axis=1)
    width = rows.shape[1]
    if width and not np.isnan(ordered[:, -1]).any():  # no NaN anywhere (NaN sorts last): the middle columns
        with np.errstate(invalid="ignore"):
            return (ordered[:, (width - 1) // 2] + ordered[:, width // 2]) / 2
    n = np.count_nonzero(~np.isnan(rows), axis=1)
    at = np.arange(len(rows))
    low, high = ordered[at, np.maximum((n - 1) // 2, 0)], ordered[at, n // 2]  # equal for an odd count
    with np.errstate(invalid="ignore"):  # inf and -inf in the middle: NaN, as numpy's own median gives
        middle = np.where(n % 2 == 1, low, (low + high) / 2)
    return np.where(n > 0, middle, np.nan)


def curve_stats(train_epochs: list[float], val_epochs: list[float], step_losses: np.ndarray | None, *,
                loss_spikes: int | None = None) -> dict[str, float]:
    """Summary keys from the exact training loss averaged per epoch, the exact validation loss per epoch and the
    exact training loss of every logged step:

    - `train_loss_drop`: 1 - (the lower of the last two epochs' means) / the first epoch's mean: ~0 on a plateau.
    - `train_loss_osc`, `val_loss_osc`: `oscillation` of the two curves.
    - `val_loss_tail_drop`, `val_loss_tail_fall`: the validation loss's mean fall per epoch over the last two
      epochs, relative and in nats (> 0 when it was still falling as training stopped).
    - `loss_spikes`: `spikes` of the step losses (or `loss_spikes`, counted already).
    """
    out: dict[str, float] = {"loss_spikes": spikes(step_losses) if loss_spikes is None else loss_spikes}
    train = [v for v in train_epochs if math.isfinite(v)]
    if len(train) >= 2 and train[0] > 0:
        out["train_loss_drop"] = 1 - min(train[-2:]) / train[0]
    out["train_loss_osc"] = oscillation(train)
    out["val_loss_osc"] = oscillation(val_epochs)
    val = [v for v in val_epochs if math.isfinite(v)]
    if len(val) >= 3 and val[-3] > 0:
        out["val_loss_tail_drop"] = (1 - val[-1] / val[-3]) / 2
        out["val_loss_tail_fall"] = (val[-3] - val[-1]) / 2
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}
