"""A metric chunk: one flush of one metric of one run, kept as typed arrays (see `core.store.codec`), with a
summary that lets a zoomed-out chart read an eighth of it.

The summary holds, of every group of steps [k * GROUP, (k + 1) * GROUP), the first, last, minimum and maximum
point, and every non-finite point with its two neighbours (`core.analysis.series.bucket_indices`). Groups are fixed
in step space, not per chunk, so a chart whose buckets are whole groups (`core.store.metrics.drawing_buckets`)
draws exactly the same picture from summaries as from every point. A chunk whose summary would not save half
of it has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from core.analysis.series import bucket_indices
from core.store.codec import decode_floats, decode_ints, encode_float_rows, encode_floats, encode_ints

GROUP = 32  # steps per summary group: the summary keeps at most 4 points of each, and every non-finite one
DATA_COLUMNS = ("step_data", "epoch_data", "value_data", "time_data")
SUMMARY_COLUMNS = ("s_step_data", "s_epoch_data", "s_value_data", "s_time_data")
FIELDS = ("epoch", "wall_time")  # the optional fields of a read; step and value are always read


@dataclass(frozen=True)
class Points:
    """Points of one metric, sorted by step: step and epoch (int64), value and wall_time (float64)."""

    step: np.ndarray
    epoch: np.ndarray
    value: np.ndarray
    wall_time: np.ndarray

    def __len__(self) -> int:
        return int(self.step.size)

    def take(self, index: np.ndarray | slice) -> Points:
        return Points(self.step[index], self.epoch[index], self.value[index], self.wall_time[index])

    @staticmethod
    def empty() -> Points:
        return Points(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))

    @staticmethod
    def concat(parts: list[Points]) -> Points:
        if not parts:
            return Points.empty()
        if len(parts) == 1:
            return parts[0]
        out = Points(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("step", "epoch", "value",
                                                                                 "wall_time")))
        if out.step.size > 1 and (np.diff(out.step) < 0).any():  # chunks out of step order: as logged, by step
            out = out.take(np.argsort(out.step, kind="stable"))
        return out


def _shared(kind: str, array: np.ndarray, encode: Any, cache: dict[tuple[str, bytes], bytes] | None) -> bytes:
    """The metrics of a flush share their steps, epochs and wall times: each distinct column is encoded once."""
    if cache is None:
        return encode(array)
    key = (kind, array.tobytes())
    if key not in cache:
        cache[key] = encode(array)
    return cache[key]


def summary_indices(step: np.ndarray, value: np.ndarray) -> np.ndarray:
    """What the summary keeps: of each group of steps [k * GROUP, (k + 1) * GROUP), the first, last, minimum and
    maximum point, and every non-finite point with its neighbours. Regular steps (one per step, the usual case)
    take a reshape; anything else `bucket_indices`."""
    n = step.size
    first, last = int(step[0]) // GROUP, int(step[-1]) // GROUP
    if n == int(step[-1]) - int(step[0]) + 1 and np.isfinite(value).all():  # every step once, no NaN or Inf
        lead = int(step[0]) - first * GROUP  # steps of the first group before this chunk began
        groups = last - first + 1
        low = np.full(groups * GROUP, np.inf)
        low[lead:lead + n] = value
        high = np.full(groups * GROUP, -np.inf)
        high[lead:lead + n] = value
        base = np.arange(groups) * GROUP - lead
        mask = np.zeros(n, dtype=bool)
        lows, highs = low.reshape(groups, GROUP).argmin(axis=1), high.reshape(groups, GROUP).argmax(axis=1)
        for index in (np.maximum(base, 0), np.minimum(base + GROUP, n) - 1, base + lows, base + highs):
            mask[index] = True
        return np.flatnonzero(mask)
    return bucket_indices(step, value, lo=first * GROUP, hi=(last + 1) * GROUP, buckets=last - first + 1)


def chunk_row(points: Points, *, time_cache: dict[tuple[str, bytes], bytes] | None = None) -> dict[str, Any]:
    """The column values of a `metric_chunks` row for `points` (one metric, sorted by step), run and key aside.
    The summary keeps steps and values only: it serves charts on the step axis, the ones zoomed out over long runs
    (an epoch or time axis reads the data)."""
    n = len(points)
    finite = points.value[np.isfinite(points.value)]
    row: dict[str, Any] = {
        "n": n, "step_first": int(points.step[0]), "step_last": int(points.step[-1]),
        "v_min": float(finite.min()) if finite.size else None, "v_max": float(finite.max()) if finite.size else None,
        "n_nonfinite": int(n - finite.size), "step_data": _shared("step", points.step, encode_ints, time_cache),
        "epoch_data": _shared("epoch", points.epoch, encode_ints, time_cache),
        "value_data": encode_floats(points.value), "time_data": _shared("time", points.wall_time, encode_floats,
                                                                        time_cache)}
    keep = summary_indices(points.step, points.value) if n > 2 * GROUP else None
    if keep is not None and keep.size <= n // 2:
        row.update(s_n=int(keep.size), s_step_data=encode_ints(points.step[keep]),
                   s_value_data=encode_floats(points.value[keep]), s_epoch_data=None, s_time_data=None)
    else:
        row.update(s_n=0, **dict.fromkeys(SUMMARY_COLUMNS))
    return row


def chunk_rows(values: np.ndarray, step: np.ndarray, epoch: np.ndarray, wall_time: np.ndarray, *,
               time_cache: dict[tuple[str, bytes], bytes] | None = None) -> list[dict[str, Any]]:
    """`chunk_row` of each row of `values` (metrics, n) at the same points (`step` sorted), equal to it column for
    column, with the arithmetic done for every metric at once: a population's flush writes a chunk for each
    metric of each member, and one at a time that was most of its time."""
    k, n = values.shape
    shared = {"step_data": _shared("step", step, encode_ints, time_cache),
              "epoch_data": _shared("epoch", epoch, encode_ints, time_cache),
              "time_data": _shared("time", wall_time, encode_floats, time_cache)}
    finite = np.isfinite(values)
    count = finite.sum(axis=1).tolist()
    low = np.where(finite, values, np.inf).min(axis=1).tolist()
    high = np.where(finite, values, -np.inf).max(axis=1).tolist()
    data = encode_float_rows(values)
    keeps = _summary_rows(step, values, finite) if n > 2 * GROUP else [None] * k
    first, last = int(step[0]), int(step[-1])
    rows = []
    for i in range(k):
        row = {"n": n, "step_first": first, "step_last": last, "v_min": low[i] if count[i] else None,
               "v_max": high[i] if count[i] else None, "n_nonfinite": n - count[i], **shared, "value_data": data[i]}
        keep = keeps[i]
        if keep is not None and keep.size <= n // 2:
            row.update(s_n=int(keep.size), s_step_data=encode_ints(step[keep]),
                       s_value_data=encode_floats(values[i, keep]), s_epoch_data=None, s_time_data=None)
        else:
            row.update(s_n=0, **dict.fromkeys(SUMMARY_COLUMNS))
        rows.append(row)
    return rows


def _summary_rows(step: np.ndarray, values: np.ndarray, finite: np.ndarray) -> list[np.ndarray]:
    """`summary_indices` of each row of `values` (metrics, n): regular steps and finite rows all at once."""
    n = step.size
    out: list[np.ndarray | None] = [None] * values.shape[0]
    first, last = int(step[0]) // GROUP, int(step[-1]) // GROUP
    whole = np.flatnonzero(finite.all(axis=1)) if n == int(step[-1]) - int(step[0]) + 1 else np.empty(0, int)
    if whole.size:  # as summary_indices' reshape, a row a metric
        lead, groups, m = int(step[0]) - first * GROUP, last - first + 1, whole.size
        low = np.full((m, groups * GROUP), np.inf)
        low[:, lead:lead + n] = values[whole]
        high = np.full((m, groups * GROUP), -np.inf)
        high[:, lead:lead + n] = values[whole]
        base = np.arange(groups) * GROUP - lead
        mask = np.zeros((m, n), dtype=bool)
        mask[:, np.maximum(base, 0)] = True
        mask[:, np.minimum(base + GROUP, n) - 1] = True
        rows = np.arange(m)[:, None]
        mask[rows, base + low.reshape(m, groups, GROUP).argmin(axis=2)] = True
        mask[rows, base + high.reshape(m, groups, GROUP).argmax(axis=2)] = True
        for j, i in enumerate(whole.tolist()):
            out[i] = np.flatnonzero(mask[j])
    for i, keep in enumerate(out):
        if keep is None:
            out[i] = summary_indices(step, values[i])
    return out  # type: ignore[return-value]


def decode(row: Mapping[str, Any] | tuple, n: int, *, summary: bool = False,
           fields: Sequence[str] = FIELDS, shared: dict[tuple[int, int, bytes], np.ndarray] | None = None) -> Points:
    """The points of a chunk from its four data columns (a mapping, or a tuple in `DATA_COLUMNS` order). Step and
    value are always decoded; "epoch" and "wall_time" only when in `fields`, else they are zeros. `shared` keeps
    decoded steps, epochs and wall times by their bytes: the metrics of a flush (or of a compacted run) store the
    same bytes for them, so a read of several decodes each once. Those arrays are shared, so they are read-only."""
    names = SUMMARY_COLUMNS if summary else DATA_COLUMNS
    cols = [row[c] for c in names] if isinstance(row, Mapping) else list(row)

    def column(i: int, decoder: Any) -> np.ndarray:
        data = bytes(cols[i])
        if shared is None:
            return decoder(data, n)
        key = (i, n, data)  # a constant stride or a run of one epoch is the same bytes at any length
        if key not in shared:
            shared[key] = decoder(data, n)
            shared[key].flags.writeable = False
        return shared[key]

    epoch = column(1, decode_ints) if "epoch" in fields and cols[1] is not None else np.zeros(n, np.int64)
    wall = column(3, decode_floats) if "wall_time" in fields and cols[3] is not None else np.zeros(n, np.float64)
    return Points(column(0, decode_ints), epoch, decode_floats(bytes(cols[2]), n), wall)


def split_batch(keys: list[str], steps: list[int], epochs: list[int], values: list[float],
                wall_times: list[float]) -> dict[str, Points]:
    """A flush's mixed rows (the trainer's `MetricBatch` columns) as one `Points` per key, each sorted by step
    (rows of a key logged at one step keep their order). The trainer adds a metric's rows together, so keys come
    in runs: the runs are found in one comparison, and only a key whose steps go back is sorted."""
    if not keys:
        return {}
    names = np.asarray(keys, dtype=object)
    cuts = np.flatnonzero(names[1:] != names[:-1]) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [names.size]])
    runs: dict[str, list[tuple[int, int]]] = {}
    for a, b in zip(starts.tolist(), ends.tolist()):
        runs.setdefault(keys[a], []).append((a, b))
    n = len(keys)  # fromiter: a fifth faster than asarray on a list of Python numbers
    step = np.fromiter(steps, dtype=np.int64, count=n)
    epoch = np.fromiter(epochs, dtype=np.int64, count=n)
    value = np.fromiter(values, dtype=np.float64, count=n)
    wall = np.fromiter(wall_times, dtype=np.float64, count=n)
    out = {}
    for name in sorted(runs):
        parts = runs[name]
        idx = slice(*parts[0]) if len(parts) == 1 else np.concatenate([np.arange(a, b) for a, b in parts])
        points = Points(step[idx], epoch[idx], value[idx], wall[idx])
        if points.step.size > 1 and (np.diff(points.step) < 0).any():
            points = points.take(np.argsort(points.step, kind="stable"))
        out[name] = points
    return out
