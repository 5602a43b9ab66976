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
from typing import Any, Mapping

import numpy as np

from core.analysis.series import bucket_indices
from core.store.codec import decode_floats, decode_ints, encode_floats, encode_ints

GROUP = 32  # steps per summary group: the summary keeps at most 4 points of each, and every non-finite one
DATA_COLUMNS = ("step_data", "epoch_data", "value_data", "time_data")
SUMMARY_COLUMNS = ("s_step_data", "s_epoch_data", "s_value_data", "s_time_data")


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


def _encode(points: Points, names: tuple[str, ...], cache: dict[bytes, bytes] | None) -> dict[str, bytes]:
    out = {names[0]: encode_ints(points.step), names[1]: encode_ints(points.epoch),
           names[2]: encode_floats(points.value)}
    if cache is None:
        out[names[3]] = encode_floats(points.wall_time)
    else:  # every metric of a logged step shares its wall time: encode each distinct column once per flush
        raw = points.wall_time.tobytes()
        if raw not in cache:
            cache[raw] = encode_floats(points.wall_time)
        out[names[3]] = cache[raw]
    return out


def chunk_row(points: Points, *, time_cache: dict[bytes, bytes] | None = None) -> dict[str, Any]:
    """The column values of a `metric_chunks` row for `points` (one metric, sorted by step), run and key aside."""
    n = len(points)
    finite = points.value[np.isfinite(points.value)]
    row: dict[str, Any] = {
        "n": n, "step_first": int(points.step[0]), "step_last": int(points.step[-1]),
        "v_min": float(finite.min()) if finite.size else None, "v_max": float(finite.max()) if finite.size else None,
        "n_nonfinite": int(n - finite.size), **_encode(points, DATA_COLUMNS, time_cache)}
    keep = None
    if n > 2 * GROUP:
        first, last = int(points.step[0]) // GROUP, int(points.step[-1]) // GROUP
        keep = bucket_indices(points.step, points.value, lo=first * GROUP, hi=(last + 1) * GROUP,
                              buckets=last - first + 1)
    if keep is not None and keep.size <= n // 2:
        row["s_n"] = int(keep.size)
        row.update(_encode(points.take(keep), SUMMARY_COLUMNS, None))
    else:
        row["s_n"] = 0
        row.update(dict.fromkeys(SUMMARY_COLUMNS))
    return row


def decode(row: Mapping[str, Any] | tuple, n: int, *, summary: bool = False) -> Points:
    """The points of a chunk from its four data columns (a mapping, or a tuple in `DATA_COLUMNS` order)."""
    names = SUMMARY_COLUMNS if summary else DATA_COLUMNS
    cols = [row[c] for c in names] if isinstance(row, Mapping) else list(row)
    return Points(decode_ints(bytes(cols[0]), n), decode_ints(bytes(cols[1]), n), decode_floats(bytes(cols[2]), n),
                  decode_floats(bytes(cols[3]), n))


def split_batch(keys: list[str], steps: list[int], epochs: list[int], values: list[float],
                wall_times: list[float]) -> dict[str, Points]:
    """A flush's mixed rows (the trainer's `MetricBatch` columns) as one `Points` per key, each sorted by step
    (rows of a key logged at one step keep their order)."""
    if not keys:
        return {}
    names, inverse = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    step = np.asarray(steps, dtype=np.int64)
    order = np.lexsort((np.arange(step.size), step, inverse))  # by key, then step, then as given
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    epoch = np.asarray(epochs, dtype=np.int64)
    value = np.asarray(values, dtype=np.float64)
    wall = np.asarray(wall_times, dtype=np.float64)
    out = {}
    for name, idx in zip(names, np.split(order, bounds)):
        out[str(name)] = Points(step[idx], epoch[idx], value[idx], wall[idx])
    return out
