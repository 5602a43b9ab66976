"""Metric series in the store: a flush written as one chunk per metric, series read whole or sized to a chart.

Writing: `chunk_records` turns the trainer's `MetricBatch` (rows of many metrics) into one `metric_chunks` row per
metric, and `insert_chunks` inserts a flush's rows (of one run, or of a population's members) together, in the
caller's transaction (`Store.log_metrics_many`), so a reader sees all of a flush or none of it.

Reading: `read_traces` picks the chunks of the asked runs, metrics and step range from their step bounds without
decoding them, then decodes only what the picture needs. With no point budget, or when the range holds no more
points than the budget, every point comes back (full resolution). Otherwise chunks that lie wholly inside the
range are read from their summaries (about an eighth of the points, every extreme and non-finite point kept), the
chunks at the range's edges from their data, and the result is reduced to the budget by x buckets
(`core.analysis.series.bucket_indices`): each bucket's first, last, minimum and maximum point and every non-finite
point. Summaries are used only where a bucket spans a summary group or more, and then the buckets are whole groups
(`drawing_buckets`: up to twice as wide as asked, so a chart may get half its buckets), and the reduction is exact
for those buckets.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from core.analysis.series import bucket_indices_many
from core.store.chunks import (DATA_COLUMNS, FIELDS, GROUP, SUMMARY_COLUMNS, Points, chunk_row, chunk_rows, decode,
                               split_batch)
from core.store.cursors import chunks, copy_rows, fetch, placeholder
from core.store.schema import ChunkModel, MetricKeyModel
from core.training.reporting import Block, MetricBatch

if TYPE_CHECKING:  # pandas loads (~0.3 s) only where a frame is made: training never needs it
    import pandas as pd

CHUNKS = ChunkModel.__table__
KEYS = MetricKeyModel.__table__


@dataclass(frozen=True)
class Trace:
    """One metric of one run as read: its points, `total` the points of the chunks it was read from at full
    resolution (exact without a range; with one, the chunks at its edges count whole), and whether `points` is a
    reduction of them."""

    run_id: int
    key: str
    points: Points
    total: int
    reduced: bool


class KeyIds:
    """Metric name -> id, cached for the life of a store (ids never change; names are never deleted)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def get(self, conn: Connection, names: Iterable[str], *, create: bool) -> dict[str, int]:
        names = list(names)
        wanted = [n for n in dict.fromkeys(names) if n not in self.ids]
        if wanted:
            self.ids.update(self._load(conn, wanted))
        missing = [n for n in wanted if n not in self.ids]
        fresh: dict[str, int] = {}
        if missing and create:
            for name in missing:
                try:
                    with conn.begin_nested():  # another writer may add the same name at the same moment
                        conn.execute(insert(KEYS).values(name=name))
                except IntegrityError:
                    pass
            # Not cached: these rows are the caller's until its transaction commits, and another thread's
            # transaction must not use an id it cannot see yet (or one a rollback takes back). The next flush
            # loads them, committed.
            fresh = self._load(conn, missing)
        return {n: self.ids.get(n, fresh.get(n)) for n in names if n in self.ids or n in fresh}

    @staticmethod
    def _load(conn: Connection, names: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in chunks(names):
            out.update(conn.execute(select(KEYS.c.name, KEYS.c.id).where(KEYS.c.name.in_(part))).all())
        return out


def chunk_records(conn: Connection, run_id: int, batch: MetricBatch, keys: KeyIds,
                  time_cache: dict[tuple[str, bytes], bytes] | None = None) -> list[dict[str, Any]]:
    """The `metric_chunks` rows of `batch` (checked: columns of one length), one per metric; `time_cache` shares
    the encoded steps, epochs and wall times between the batches of one flush (a population's members')."""
    batch.check()
    lists, blocks = batch.parts()  # a block's metrics are written from its arrays, together (`chunk_rows`)
    names = set(lists[0]).union(*(b.keys for b in blocks))
    bad = [k for k in names if not isinstance(k, str) or not k.strip() or len(k) > 255]
    if bad:
        raise ValueError(f"a metric key must be a non-empty string of at most 255 characters; got {bad[0]!r}")
    parts: dict[str, list[Points]] = {name: [points] for name, points in split_batch(*lists).items()}
    seen = Counter(chain(parts, *(b.keys for b in blocks)))
    whole: list[Block] = []  # blocks whose every metric is in no other part of the batch, steps sorted
    for block in blocks:
        if all(seen[k] == 1 for k in block.keys) and (np.diff(block.steps) >= 0).all():
            whole.append(block)
            continue
        order = np.argsort(block.steps, kind="stable")  # as split_batch sorts a key's rows
        for key, values in zip(block.keys, block.values):
            parts.setdefault(key, []).append(Points(block.steps, block.epochs, values, block.wall_times).take(order))
    if not parts and not whole:
        return []
    ids = keys.get(conn, sorted(names), create=True)
    time_cache = {} if time_cache is None else time_cache  # a flush's shared steps, epochs and wall times
    made = {name: chunk_row(Points.concat(pieces), time_cache=time_cache) for name, pieces in parts.items()}
    for b in whole:
        made.update(zip(b.keys, chunk_rows(b.values, b.steps, b.epochs, b.wall_times, time_cache=time_cache)))
    return [{"run_id": run_id, "key_id": ids[name], **made[name]} for name in sorted(made)]


def insert_chunks(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert `metric_chunks` rows (`chunk_records`): on PostgreSQL in one binary COPY (`copy_rows`), elsewhere
    in one executemany."""
    if not rows or copy_rows(conn, "metric_chunks", CHUNK_COLUMNS, rows):
        return
    sql = _insert_sql(conn)
    if sql.positional:  # the compiled INSERT straight to the driver: none of these columns needs processing
        conn.exec_driver_sql(sql.string, [tuple(row[c] for c in sql.positiontup) for row in rows])
    else:
        conn.exec_driver_sql(sql.string, [{c: row[c] for c in CHUNK_COLUMNS} for row in rows])


CHUNK_COLUMNS = ("run_id", "key_id", "n", "step_first", "step_last", "v_min", "v_max", "n_nonfinite", *DATA_COLUMNS,
                 "s_n", *SUMMARY_COLUMNS)
_COMPILED: dict[str, Any] = {}


def _insert_sql(conn: Connection) -> Any:
    """The chunk INSERT compiled once per dialect; executing its SQL directly skips SQLAlchemy's per-row parameter
    processing (a third of a flush's time, for columns that need none: ints, floats, bytes, NULL)."""
    name = conn.dialect.name
    if name not in _COMPILED:
        _COMPILED[name] = insert(CHUNKS).compile(dialect=conn.dialect, column_keys=list(CHUNK_COLUMNS))
    return _COMPILED[name]


COMPACT_POINTS = 1 << 16  # a compacted chunk's most points: one chunk per metric for runs up to 65,536 steps
COMPACT_BATCH = 1 << 20  # points compacted per read, insert and delete: a bound on the memory it takes
# A finished run's metric is compacted when that pays: more than this many chunks, or more than this many points
# in more chunks than they need. A short run's few small chunks read as fast as one, and compacting them would
# cost its finish more than they ever cost a read (a population's members finish by the hundred).
PAYING_CHUNKS = 8
PAYING_POINTS = 1 << 12


def compact_run(conn: Connection, run_id: int, *, when_it_pays: bool = False) -> int:
    """Merge each metric's chunks of a run that has stopped writing into chunks of up to `COMPACT_POINTS` points
    (returns how many chunks went). A run of 20,000 steps flushed every 500 is 40 chunks a metric, and reading
    a chart's 100 curves would decode 4,000; compacted it decodes 100. Values, steps, epochs and wall times are
    decoded and encoded again bit for bit; the new chunks go in and the old ones out in the caller's transaction,
    so a reader sees the run whole before or after, never both or neither (`read_traces` reads in one
    transaction, and reads again if a chunk it planned has gone). `when_it_pays`: only the metrics whose chunks
    are many or big (`PAYING_CHUNKS`, `PAYING_POINTS`), as `Store.finish_run` asks."""
    mark = placeholder(conn)
    meta = fetch(conn, f"SELECT id, key_id, n FROM metric_chunks WHERE run_id = {mark} ORDER BY key_id, step_first, "
                       "id", (int(run_id),))
    by_key: dict[int, list[tuple[int, int]]] = {}
    for chunk_id, key_id, n in meta:
        by_key.setdefault(key_id, []).append((chunk_id, n))
    todo = [(key_id, parts) for key_id, parts in by_key.items()
            if _worth_compacting(len(parts), sum(n for _, n in parts), when_it_pays)]
    removed = 0
    time_cache: dict[tuple[str, bytes], bytes] = {}  # the metrics' steps, epochs and times: encoded once,
    shared: dict[tuple[int, int, bytes], np.ndarray] = {}  # and decoded once
    batch: list[tuple[int, list[tuple[int, int]]]] = []
    for i, (key_id, parts) in enumerate(todo):  # metrics a million points at a time: one read, insert, delete
        batch.append((key_id, parts))
        if i + 1 < len(todo) and sum(n for _, p in batch for _, n in p) < COMPACT_BATCH:
            continue
        ids = [c for _, p in batch for c, _ in p]
        data = _fetch_data(conn, ids, DATA_COLUMNS)
        rows = []
        for metric, metric_parts in batch:
            points = Points.concat([decode(data[c], n, shared=shared) for c, n in metric_parts])
            rows += [(int(run_id), metric, chunk_row(points.take(slice(at, at + COMPACT_POINTS)),
                                                     time_cache=time_cache))
                     for at in range(0, len(points), COMPACT_POINTS)]
        rows = [{"run_id": r, "key_id": k, **row} for r, k, row in rows]
        insert_chunks(conn, rows)  # on PostgreSQL by one binary COPY, as a flush's
        for part in chunks(ids):
            conn.exec_driver_sql(f"DELETE FROM metric_chunks WHERE id IN ({', '.join([mark] * len(part))})",
                                 tuple(part))
        removed += len(ids) - len(rows)
        batch = []
    return removed


def _worth_compacting(n_chunks: int, points: int, when_it_pays: bool) -> bool:
    """Whether `compact_run` merges a metric of `n_chunks` chunks holding `points` points: only if that leaves
    fewer chunks, and with `when_it_pays` only if they are many or big (`PAYING_CHUNKS`, `PAYING_POINTS`)."""
    return n_chunks > math.ceil(points / COMPACT_POINTS) and (
        not when_it_pays or n_chunks > PAYING_CHUNKS or points > PAYING_POINTS)


def runs_to_compact(conn: Connection, run_ids: Sequence[int]) -> list[int]:
    """The runs among `run_ids` that `compact_run(when_it_pays=True)` would change, from one grouped query a
    chunk of ids (a population's members end by the hundred, and few of them have anything to merge)."""
    out: set[int] = set()
    mark = placeholder(conn)
    for part in chunks(list(run_ids)):
        for run_id, n_chunks, points in fetch(conn, f"SELECT run_id, COUNT(*), SUM(n) FROM metric_chunks WHERE "
                                                    f"run_id IN ({', '.join([mark] * len(part))}) GROUP BY run_id, "
                                                    "key_id", tuple(int(i) for i in part)):
            if _worth_compacting(int(n_chunks), int(points), True):
                out.add(int(run_id))
    return sorted(out)


def metric_names(conn: Connection, run_ids: Sequence[int]) -> list[str]:
    """Every metric name any of the runs has, sorted."""
    mark = placeholder(conn)
    out: set[str] = set()
    for part in chunks(sorted(set(run_ids))):
        out.update(r[0] for r in fetch(conn, "SELECT DISTINCT k.name FROM metric_keys k WHERE k.id IN (SELECT "
                                             f"c.key_id FROM metric_chunks c WHERE c.run_id IN "
                                             f"({', '.join([mark] * len(part))}))", tuple(part)))
    return sorted(out)


def read_traces(conn: Connection, run_ids: Sequence[int], keys: Sequence[str] | None = None, *,
                x_range: tuple[float, float] | None = None, max_points: int | None = None,
                fields: Sequence[str] = FIELDS) -> list[Trace]:
    """The series of `run_ids` x `keys` (None: every metric they have), ordered by run id then metric name;
    pairs without points are left out. `x_range` (first step, last step), inclusive, limits them to that range;
    `max_points` sizes them to a chart (about four points per pixel column: pass 4 x its width). `fields` are the
    columns to decode besides `step` and `value` ("epoch", "wall_time"); the others come back as zeros (a chart on
    the step axis needs neither)."""
    ids = sorted({int(i) for i in run_ids})
    if not ids or (keys is not None and not keys):
        return []
    for _ in range(10):  # a run compacted between picking its chunks and reading them: pick again
        out = _read_once(conn, ids, keys, x_range=x_range, max_points=max_points, fields=fields)
        if out is not None:
            return out
    raise RuntimeError("the runs' metric chunks kept changing while they were read; try again")


def _read_once(conn: Connection, ids: list[int], keys: Sequence[str] | None, *, x_range: tuple[float, float] | None,
               max_points: int | None, fields: Sequence[str]) -> list[Trace] | None:
    """`read_traces`, or None when a chunk it picked had gone by the time its data was read (`compact_run`)."""
    mark = placeholder(conn)
    meta: list[tuple[Any, ...]] = []  # (chunk id, run_id, name, n, step_first, step_last, s_n)
    key_filter, key_params = "", ()
    if keys is not None:
        names = sorted(set(keys))
        key_filter, key_params = f" AND k.name IN ({', '.join([mark] * len(names))})", tuple(names)
    range_filter, range_params = "", ()
    if x_range is not None:
        range_filter, range_params = f" AND c.step_last >= {mark} AND c.step_first <= {mark}", \
            (int(np.floor(x_range[0])), int(np.ceil(x_range[1])))
    for part in chunks(ids):
        meta += fetch(conn, "SELECT c.id, c.run_id, k.name, c.n, c.step_first, c.step_last, c.s_n "
                            "FROM metric_chunks c JOIN metric_keys k ON k.id = c.key_id "
                            f"WHERE c.run_id IN ({', '.join([mark] * len(part))}){key_filter}{range_filter} "
                            "ORDER BY c.run_id, k.name, c.step_first, c.id",
                      (*part, *key_params, *range_params))
    by_trace: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
    for row in meta:
        by_trace.setdefault((row[1], row[2]), []).append(row)
    lo, hi = (x_range if x_range is not None else (-np.inf, np.inf))
    plan: dict[tuple[int, str], list[tuple[int, int, bool]]] = {}  # trace -> [(chunk id, n, from summary)]
    for trace, rows in by_trace.items():
        # summaries serve only buckets of a whole group or more; else the data, reduced exactly as it is
        sized = max_points is not None and _in_range(rows, lo, hi) > max_points
        grouped = sized and _bucket_steps(rows, lo, hi, max_points) >= GROUP
        plan[trace] = [(r[0], r[6] if use else r[3], use) for r in rows
                       for use in [grouped and r[6] > 0 and r[4] >= lo and r[5] <= hi]]
    data = _fetch_data(conn, [c for p in plan.values() for c, _, s in p if not s], DATA_COLUMNS)
    summaries = _fetch_data(conn, [c for p in plan.values() for c, _, s in p if s], SUMMARY_COLUMNS)
    if len(data) + len(summaries) < sum(len(p) for p in plan.values()):
        return None
    read: list[tuple[int, str, Points, bool]] = []
    shared: dict[tuple[int, int, bytes], np.ndarray] = {}  # a run's metrics share their steps, epochs and wall times
    reduce_at: list[tuple[int, float, float, int]] = []  # (index in read, first edge, last edge, buckets)
    for (run_id, key), parts in plan.items():
        points = Points.concat([decode((summaries if s else data)[c], n, fields=fields, shared=shared)
                                for c, n, s in parts])
        if x_range is not None:
            inside = (points.step >= lo) & (points.step <= hi)
            if not inside.all():
                points = points.take(inside)
        reduced = any(s for _, _, s in parts)
        if max_points is not None and len(points) > max_points:
            first, last = (lo, hi) if x_range is not None else (int(points.step[0]), int(points.step[-1]))
            reduce_at.append((len(read), *drawing_buckets(first, last, max_points, whole_groups=reduced)))
            reduced = True
        read.append((run_id, key, points, reduced))
    if reduce_at:  # every curve's buckets in one pass
        picks = bucket_indices_many([read[i][2].step for i, *_ in reduce_at], [read[i][2].value for i, *_ in reduce_at],
                                    lo=[r[1] for r in reduce_at], hi=[r[2] for r in reduce_at],
                                    buckets=[r[3] for r in reduce_at])
        for (i, *_), keep in zip(reduce_at, picks):
            run_id, key, points, reduced = read[i]
            read[i] = (run_id, key, points.take(keep), reduced)
    return [Trace(run_id, key, points, sum(r[3] for r in by_trace[(run_id, key)]), reduced)
            for run_id, key, points, reduced in read if len(points)]


def drawing_buckets(lo: float, hi: float, max_points: int, *, whole_groups: bool) -> tuple[float, float, int]:
    """The x buckets a reduced read draws [lo, hi] with: (first edge, last edge, count). About `max_points // 4`
    equal buckets; read from summaries (`whole_groups`), each bucket is a whole number of summary groups with edges
    on group edges, so every bucket's first, last, minimum and maximum point is among the summaries' points."""
    buckets = max(1, max_points // 4)
    if not whole_groups:
        return lo, hi, buckets
    width = max(1, math.ceil((hi - lo + 1) / buckets / GROUP)) * GROUP
    edge = math.floor(lo / GROUP) * GROUP
    count = max(1, math.ceil((hi + 1 - edge) / width))
    return edge, edge + count * width, count


def _bucket_steps(rows: list[tuple[Any, ...]], lo: float, hi: float, max_points: int) -> float:
    first, last = max(lo, min(r[4] for r in rows)), min(hi, max(r[5] for r in rows))
    return (last - first + 1) / max(1, max_points // 4)


def _in_range(rows: list[tuple[Any, ...]], lo: float, hi: float) -> float:
    """Points of these chunks within [lo, hi]: exact for chunks wholly inside, estimated for the ones at the edges
    from the share of their step span that lies inside (metrics are logged at regular steps)."""
    total = 0.0
    for _, _, _, n, first, last, _ in rows:
        if first >= lo and last <= hi:
            total += n
        else:
            span = max(last - first, 1)
            total += n * max(0.0, min(hi, last) - max(lo, first) + 1) / (span + 1)
    return total


def _fetch_data(conn: Connection, chunk_ids: list[int], columns: tuple[str, ...]) -> dict[int, tuple]:
    """chunk id -> its four encoded columns, `columns` (data or summary), in one query per 500 chunks."""
    out: dict[int, tuple] = {}
    mark = placeholder(conn)
    for part in chunks(sorted(chunk_ids)):
        for row in fetch(conn, f"SELECT id, {', '.join(columns)} FROM metric_chunks "
                               f"WHERE id IN ({', '.join([mark] * len(part))})", tuple(part)):
            out[row[0]] = row[1:]
    return out


def traces_frame(traces: Sequence[Trace]) -> pd.DataFrame:
    """Traces as one long frame: run_id, key, step, epoch, value, wall_time (the shape charts and CSV take)."""
    import pandas as pd  # noqa: PLC0415

    lengths = np.array([len(t.points) for t in traces], dtype=np.int64)
    def column(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([getattr(t.points, name) for t in traces]) if traces else np.empty(0, dtype)
    return pd.DataFrame({
        "run_id": np.repeat(np.array([t.run_id for t in traces], dtype=np.int64), lengths),
        "key": pd.array(np.repeat(np.array([t.key for t in traces], dtype=object), lengths), dtype="str"),
        "step": column("step", np.int64), "epoch": column("epoch", np.int64),
        "value": column("value", np.float64), "wall_time": column("wall_time", np.float64),
    })
