"""The run summary: final, best, peak, lowest and median values, and the shape of the loss curves, kept up to date
from each fetched batch of rows so that findings can read one small dict instead of the series.

Per-step values that findings judge by their typical size (gradient norms, relative update sizes, the share of
updates that rounded away) are kept as float64 arrays, 8 bytes a value, and reduced to medians at the end; past
MAX_SAMPLES logged steps every other one is dropped (and from then on only every second, fourth, ... step is
kept), so a long run keeps an even sample of at most that many per key.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np

from core.training.curves import curve_stats

_MEDIAN_PREFIXES = ("grad_norm", "update_ratio/", "stuck_update_frac")
MAX_SAMPLES = 100_000
# summary names of run-wide extremes that read better than peak_/min_ + the metric's name
_RENAMED = {"margin_min": "min_margin", "val_logit_min": "min_val_logit", "val_logit_max": "max_val_logit"}


class Summary:
    """Final, best and peak values, updated from each fetched batch of rows."""

    PEAKS = ("clamp_frac", "clamp_wrong_frac", "eps_clamp_frac", "grad_vanish_frac", "logit_abs_max", "dead_relu_frac",
             "val_logit_max")
    LOWEST = ("pred_pos_rate", "margin_min", "val_logit_min")

    def __init__(self) -> None:
        self.final: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.lowest: dict[str, float] = {}
        self.best_val_loss = math.inf
        self.best_val_epoch: int | None = None
        self.best_val_acc = -math.inf
        self.zero_update_steps = 0
        self.samples: dict[str, array] = {}  # per-step values reduced to medians, one logged step in `stride`
        self.stride = 1
        self.sampled_steps = 0  # logged steps offered to `samples` so far
        self.train_by_epoch: dict[int, list[float]] = {}  # epoch -> [sum, count] of the exact training loss
        self.step_losses = array("d")  # the exact training loss of every logged step (loss spikes)
        self.val_losses: list[float] = []  # the exact validation loss of every epoch
        self.reliability: dict[str, list[float]] | None = None
        self.extra: dict[str, Any] = {}  # set by the trainer: input scale, where a divergence started, ...

    def add_columns(self, columns: dict[str, list[float]], epochs: list[int]) -> None:
        """Values by key, position i of every column measured in epoch `epochs[i]`."""
        for key, col in columns.items():
            if not col:
                continue
            self.final[key] = col[-1]
            if key in self.PEAKS or key in self.LOWEST:
                values = np.asarray(col, dtype=np.float64)
                finite = values[np.isfinite(values)]
                if finite.size and (key in self.PEAKS or key == "pred_pos_rate"):
                    self.peak[key] = max(self.peak.get(key, -math.inf), float(finite.max()))
                if finite.size and key in self.LOWEST:
                    self.lowest[key] = min(self.lowest.get(key, math.inf), float(finite.min()))
            if key.startswith(_MEDIAN_PREFIXES):
                skip = -self.sampled_steps % self.stride  # the first position of this batch on the stride
                self.samples.setdefault(key, array("d")).extend(col[skip::self.stride])
        self.sampled_steps += max((len(col) for k, col in columns.items() if k.startswith(_MEDIAN_PREFIXES)),
                                  default=0)
        if any(len(values) > MAX_SAMPLES for values in self.samples.values()):
            self.samples = {k: array("d", values[::2]) for k, values in self.samples.items()}
            self.stride *= 2
        exact = columns.get("train_loss_logits") or columns.get("train_loss") or []
        self.step_losses.extend(exact)
        if exact:
            self._add_train_losses(np.asarray(exact, dtype=np.float64), np.asarray(epochs[:len(exact)]))
        self.val_losses.extend(columns.get("val_loss_logits", ()))
        for i, v in enumerate(columns.get("val_loss", ())):
            if v < self.best_val_loss:
                self.best_val_loss, self.best_val_epoch = v, epochs[i]
        for v in columns.get("val_acc", ()):
            self.best_val_acc = max(self.best_val_acc, v)
        if "update_norm" in columns:
            self.zero_update_steps += sum(1 for g, u in zip(columns["grad_norm"], columns["update_norm"])
                                          if u == 0.0 and g > 0.0)

    def _add_train_losses(self, values: np.ndarray, epochs: np.ndarray) -> None:
        """Add the finite training losses to their epochs' sums and counts, one after another as a loop would
        (numpy's cumulative sum adds in order), each epoch's values being adjacent."""
        finite = np.isfinite(values)
        values, epochs = values[finite], epochs[finite]
        starts = np.flatnonzero(np.concatenate([[True], epochs[1:] != epochs[:-1]])) if values.size else []
        for a, b in zip(starts, [*starts[1:], values.size]):
            acc = self.train_by_epoch.setdefault(int(epochs[a]), [0.0, 0])
            acc[0] = float(np.cumsum(np.concatenate([[acc[0]], values[a:b]]))[-1])
            acc[1] += int(b - a)

    def as_dict(self, *, steps: int, epochs: int, diverged_step: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": steps, "epochs_completed": epochs}
        for key in ("train_loss", "train_loss_logits", "val_loss", "val_loss_logits", "val_acc", "val_auc",
                    "train_acc", "val_pred_pos_rate", "pred_pos_rate", "grad_norm", "update_norm", "logit_abs_max",
                    "val_ece", "dead_relu_frac"):
            if key in self.final:
                out[f"final_{key}"] = self.final[key]
        for key, v in self.peak.items():
            out[_RENAMED.get(key, f"peak_{key}")] = v
        for key, v in self.lowest.items():
            out[_RENAMED.get(key, f"min_{key}")] = v
        if self.best_val_epoch is not None:
            out["best_val_loss"], out["best_val_epoch"] = self.best_val_loss, self.best_val_epoch
        if self.best_val_acc > -math.inf:
            out["best_val_acc"] = self.best_val_acc
        if "update_norm" in self.final:
            out["zero_update_steps"] = self.zero_update_steps
        for key, values in sorted(self.samples.items()):
            finite = np.asarray(values)
            finite = finite[np.isfinite(finite)]
            if finite.size:
                out[f"median_{key}"] = float(np.median(finite))
        train = [s / n for _, (s, n) in sorted(self.train_by_epoch.items()) if n]
        out.update(curve_stats(train, self.val_losses, np.asarray(self.step_losses)))
        if self.reliability is not None:
            out["calibration"] = self.reliability
        out["diverged_step"] = diverged_step
        out.update(self.extra)
        return out
