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

from core.training.curves import nan_medians, curve_stats, spikes_rows

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
        by_length: dict[int, dict[str, np.ndarray]] = {}  # one length in practice: every column a logged step
        for key, col in columns.items():
            if len(col):
                by_length.setdefault(len(col), {})[key] = np.asarray(col, dtype=np.float64)[None]
        for n, part in by_length.items():
            Summary.add_many([self], part, epochs[:n])

    @staticmethod
    def add_many(summaries: list["Summary"], columns: dict[str, np.ndarray], epochs: list[int],
                 has: dict[str, np.ndarray] | None = None) -> None:
        """`add_columns` for many runs measured at the same steps: `columns[key]` holds run i's values in row i,
        (runs, n), position j measured in epoch `epochs[j]`; `has[key]` says which runs have the key (all when
        not given). The arithmetic runs over every run at once; what is left per run is storing its results.
        A population's flush adds its members this way; a single run's `add_columns` is the case of one."""
        n = len(epochs)
        if not n or not summaries:
            return
        runs = len(summaries)
        everyone = np.ones(runs, dtype=bool)
        has = has or {}
        with np.errstate(invalid="ignore"):
            # every key's last value, a run's row of them set in one update
            keys = list(columns)
            lasts = np.stack([values[:, -1] for values in columns.values()], axis=1).tolist()
            if not any(key in has and not has[key].all() for key in keys):
                for i, s in enumerate(summaries):
                    s.final.update(zip(keys, lasts[i]))
            else:  # a key only some runs have: a row of flags a run, read as Python bools
                present = np.stack([has.get(key, everyone) for key in keys], axis=1).tolist()
                for i, s in enumerate(summaries):
                    s.final.update([(key, v) for key, v, here in zip(keys, lasts[i], present[i]) if here])
            # each run's first position of this batch on its stride, and the stride: one for runs that started together
            grid_of = [(-s.sampled_steps % s.stride, s.stride) for s in summaries]
            for key, values in columns.items():
                extreme = key in Summary.PEAKS or key in Summary.LOWEST
                sampled = key.startswith(_MEDIAN_PREFIXES)
                if not (extreme or sampled):
                    continue
                present = has.get(key, everyone)
                peak = lowest = None
                if extreme:
                    finite = np.isfinite(values)
                    any_finite = finite.any(axis=1).tolist()
                    if key in Summary.PEAKS or key == "pred_pos_rate":
                        peak = np.where(finite, values, -math.inf).max(axis=1).tolist()
                    if key in Summary.LOWEST:
                        lowest = np.where(finite, values, math.inf).min(axis=1).tolist()
                cut: dict[tuple[int, int], tuple[bytes, int]] = {}  # per grid: every run's samples, from one array
                if sampled:
                    for skip, stride in set(grid_of):
                        taken = np.ascontiguousarray(values[:, skip::stride], dtype=np.float64)
                        cut[skip, stride] = taken.tobytes(), taken.shape[1] * 8
                for i, s in enumerate(summaries):
                    if not present[i]:
                        continue
                    if peak is not None and any_finite[i]:
                        s.peak[key] = max(s.peak.get(key, -math.inf), peak[i])
                    if lowest is not None and any_finite[i]:
                        s.lowest[key] = min(s.lowest.get(key, math.inf), lowest[i])
                    if sampled:
                        raw, width = cut[grid_of[i]]
                        s.samples.setdefault(key, array("d")).frombytes(raw[i * width:(i + 1) * width])
            sampled_keys = [key for key in columns if key.startswith(_MEDIAN_PREFIXES)]
            exact_key = "train_loss_logits" if "train_loss_logits" in columns else \
                "train_loss" if "train_loss" in columns else None
            epoch_ids = np.asarray(epochs)
            if exact_key is not None:
                exact = columns[exact_key]
                present = has.get(exact_key, everyone)
                starts = np.flatnonzero(np.concatenate([[True], epoch_ids[1:] != epoch_ids[:-1]]))
                spans = [(int(epoch_ids[a]), a, b) for a, b in zip(starts, [*starts[1:], n])]
                finite = np.isfinite(exact)
                kept = np.where(finite, exact, 0.0)  # + 0.0 leaves a sum of losses as it was
                totals, counts = [], []
                for epoch, a, b in spans:  # an epoch begun in an earlier batch goes on from its sum and count
                    prior = np.asarray([s.train_by_epoch.get(epoch, (0.0, 0)) for s in summaries], dtype=np.float64)
                    # added one after another, as a loop would: numpy's cumulative sum adds in order
                    totals.append(np.cumsum(np.concatenate([prior[:, :1], kept[:, a:b]], axis=1), axis=1)[:, -1])
                    counts.append(finite[:, a:b].sum(axis=1) + prior[:, 1].astype(np.int64))
                totals_by_run, counts_by_run = np.stack(totals, axis=1).tolist(), np.stack(counts, axis=1).tolist()
                epoch_list = [epoch for epoch, _, _ in spans]
                for i, s in enumerate(summaries):
                    if present[i]:  # an epoch with no finite loss in it yet is left out
                        s.train_by_epoch.update([(epoch, [total, count]) for epoch, total, count
                                                 in zip(epoch_list, totals_by_run[i], counts_by_run[i]) if count])
            val_exact = columns.get("val_loss_logits")
            val = columns.get("val_loss")
            best = best_at = None
            if val is not None:
                low = np.where(np.isnan(val), math.inf, val)  # NaN is never better
                best, best_at = low.min(axis=1).tolist(), low.argmin(axis=1).tolist()  # the first of equals
            acc = columns.get("val_acc")
            top = np.where(np.isnan(acc), -math.inf, acc).max(axis=1).tolist() if acc is not None else None
            zero = None
            if "update_norm" in columns and "grad_norm" in columns:
                zero = ((columns["update_norm"] == 0.0) & (columns["grad_norm"] > 0.0)).sum(axis=1).tolist()
            for i, s in enumerate(summaries):
                s.sampled_steps += n if any(has.get(key, everyone)[i] for key in sampled_keys) else 0
                # no key holds more samples than the stride's positions among the sampled steps
                if -(-s.sampled_steps // s.stride) > MAX_SAMPLES \
                        and any(len(values) > MAX_SAMPLES for values in s.samples.values()):
                    s.samples = {k: array("d", values[::2]) for k, values in s.samples.items()}
                    s.stride *= 2
                if exact_key is not None and has.get(exact_key, everyone)[i]:
                    s.step_losses.frombytes(np.ascontiguousarray(columns[exact_key][i]).tobytes())
                if val_exact is not None and has.get("val_loss_logits", everyone)[i]:
                    s.val_losses.extend(val_exact[i].tolist())
                if best is not None and has.get("val_loss", everyone)[i] and best[i] < s.best_val_loss:
                    s.best_val_loss, s.best_val_epoch = best[i], int(epoch_ids[best_at[i]])
                if top is not None and has.get("val_acc", everyone)[i]:
                    s.best_val_acc = max(s.best_val_acc, top[i])
                if zero is not None and has.get("update_norm", everyone)[i]:
                    s.zero_update_steps += zero[i]

    def as_dict(self, *, steps: int, epochs: int, diverged_step: int | None) -> dict[str, Any]:
        return Summary.as_dicts([self], steps=[steps], epochs=[epochs], diverged_steps=[diverged_step])[0]

    @staticmethod
    def as_dicts(summaries: list["Summary"], *, steps: list[int], epochs: list[int],
                 diverged_steps: list[int | None]) -> list[dict[str, Any]]:
        """`as_dict` of many runs: the medians and the loss spikes of runs with samples of one length are
        computed over all of them at once (a population's members end together)."""
        medians = [dict() for _ in summaries]
        for key in sorted({key for s in summaries for key in s.samples}):
            runs = [i for i, s in enumerate(summaries) if key in s.samples]
            for group, table in _by_length([summaries[i].samples[key] for i in runs]):
                if not table.shape[1]:
                    continue
                with np.errstate(invalid="ignore"):
                    middle = nan_medians(np.where(np.isfinite(table), table, np.nan))
                for j, value in zip(group, middle.tolist()):
                    if value == value:  # NaN: no finite sample
                        medians[runs[j]][f"median_{key}"] = value
        spikes = [0] * len(summaries)
        for group, table in _by_length([s.step_losses for s in summaries]):
            for j, count in zip(group, spikes_rows(table).tolist()):
                spikes[j] = count
        return [s._as_dict(steps=n, epochs=e, diverged_step=d, medians=m, loss_spikes=c)
                for s, n, e, d, m, c in zip(summaries, steps, epochs, diverged_steps, medians, spikes)]

    def _as_dict(self, *, steps: int, epochs: int, diverged_step: int | None, medians: dict[str, float],
                 loss_spikes: int) -> dict[str, Any]:
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
        out.update(medians)  # median_<key>, in key order
        train = [s / n for _, (s, n) in sorted(self.train_by_epoch.items()) if n]
        out.update(curve_stats(train, self.val_losses, None, loss_spikes=loss_spikes))
        if self.reliability is not None:
            out["calibration"] = self.reliability
        out["diverged_step"] = diverged_step
        out.update(self.extra)
        return out


def _by_length(rows: list[array]) -> list[tuple[list[int], np.ndarray]]:
    """Rows of float64 values grouped by length: (their positions, their (rows, length) table)."""
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(len(row), []).append(i)
    return [(group, np.frombuffer(b"".join(rows[i].tobytes() for i in group), dtype=np.float64)
             .reshape(len(group), length)) for length, group in groups.items()]
