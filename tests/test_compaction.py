"""Compaction: a finished run's chunks (one per flush) become one per metric, with every value, step, epoch and wall
time bit for bit as logged, the same drawing sized to a chart, and a reader that picked the old chunks reading
again rather than failing or losing points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.store import Store, metrics
from core.training.reporting import MetricBatch


def bits(a) -> list[int]:
    return np.asarray(a, dtype=np.float64).view(np.uint64).tolist()


def fields(trace) -> tuple:
    p = trace.points
    return trace.run_id, trace.key, p.step.tolist(), p.epoch.tolist(), bits(p.value), bits(p.wall_time)


def chunk_count(store: Store, run_id: int) -> int:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM metric_chunks WHERE run_id = ?", (run_id,)).scalar()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(f"sqlite:///{tmp_path / 'runs.db'}") as s:
        yield s


def log_flushes(store: Store, run_id: int, *, flushes: int, size: int) -> None:
    """`flushes` flushes of `size` steps of a noisy loss (float32, as the trainer logs) with NaN, +-Inf and -0.0,
    a per-epoch metric, and a metric whose flushes log the same step twice."""
    rng = np.random.default_rng(run_id)
    for f in range(flushes):
        steps = list(range(f * size + 1, (f + 1) * size + 1))
        loss = np.float32(np.exp(-np.arange(f * size, (f + 1) * size) / 3000) + 0.05 * rng.random(size))
        values = loss.astype(np.float64).tolist()
        values[3], values[7], values[11], values[13] = math.nan, math.inf, -math.inf, -0.0
        batch = MetricBatch()
        wall = (1000.0 + 0.000317 * np.array(steps) + rng.uniform(0, 1e-6, size)).tolist()
        batch.add_series("train_loss", steps, [s // 97 for s in steps], values, wall)
        batch.add_series("val_loss", [steps[-1]], [steps[-1] // 97], [float(np.float32(0.5 / (f + 1)))], [wall[-1]])
        batch.add_series("twice", [steps[0], steps[0]], [0, 0], [1.0 + f, 2.0 + f], [wall[0], wall[0]])
        store.log_metrics(run_id, batch)


def test_finishing_a_run_leaves_one_chunk_per_metric_with_every_bit(store: Store):
    run_id = store.create_run(name="long", config={})
    log_flushes(store, run_id, flushes=12, size=500)
    assert chunk_count(store, run_id) == 36
    before = [fields(t) for t in store.traces([run_id])]
    sized_before = [fields(t) for t in store.traces([run_id], max_points=400)]
    zoom_before = [fields(t) for t in store.traces([run_id], x_range=(2400, 3700), max_points=400)]

    store.finish_run(run_id, status="finished", summary={})

    assert chunk_count(store, run_id) == 3
    assert [fields(t) for t in store.traces([run_id])] == before
    assert [t[2] for t in before if t[1] == "twice"] == [[1 + 500 * f for f in range(12) for _ in (0, 1)]]
    assert [fields(t) for t in store.traces([run_id], max_points=400)] == sized_before
    assert [fields(t) for t in store.traces([run_id], x_range=(2400, 3700), max_points=400)] == zoom_before
    assert store.compact(run_id) == 0, "compacting again changes nothing"


def test_a_long_run_compacts_into_chunks_of_at_most_compact_points(store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(metrics, "COMPACT_POINTS", 1024)
    run_id = store.create_run(name="long", config={})
    log_flushes(store, run_id, flushes=10, size=300)  # 3,000 train_loss points: 3 chunks of 1,024 at most
    before = [fields(t) for t in store.traces([run_id])]
    assert store.compact(run_id) == (10 - 3) + (10 - 1) + (10 - 1)
    assert chunk_count(store, run_id) == 3 + 1 + 1
    assert [fields(t) for t in store.traces([run_id])] == before


def test_other_runs_are_left_alone(store: Store):
    a, b = store.create_run(name="a", config={}), store.create_run(name="b", config={})
    log_flushes(store, a, flushes=3, size=200)
    log_flushes(store, b, flushes=3, size=200)
    assert store.compact(a) == 6
    assert (chunk_count(store, a), chunk_count(store, b)) == (3, 9)


def test_finishing_compacts_only_the_metrics_where_it_pays(store: Store, monkeypatch: pytest.MonkeyPatch):
    """A short run's few small chunks stay as they are when it finishes (a read of them costs what one chunk's
    does); a metric with more than PAYING_CHUNKS chunks, or more than PAYING_POINTS points, is compacted."""
    short = store.create_run(name="short", config={})
    log_flushes(store, short, flushes=metrics.PAYING_CHUNKS, size=200)  # 8 x 200 = 1,600 points a metric
    store.finish_run(short, status="finished", summary={})
    assert chunk_count(store, short) == 3 * metrics.PAYING_CHUNKS
    longer = store.create_run(name="more chunks", config={})
    log_flushes(store, longer, flushes=metrics.PAYING_CHUNKS + 1, size=200)
    store.finish_run(longer, status="finished", summary={})
    assert chunk_count(store, longer) == 3
    monkeypatch.setattr(metrics, "PAYING_POINTS", 1000)  # train_loss's 1,600 points pay; the others' 16 do not
    bigger = store.create_run(name="more points", config={})
    log_flushes(store, bigger, flushes=metrics.PAYING_CHUNKS, size=200)
    store.finish_run(bigger, status="finished", summary={})
    assert chunk_count(store, bigger) == 1 + 2 * metrics.PAYING_CHUNKS


def test_a_reader_whose_chunks_were_compacted_under_it_reads_again(store: Store, monkeypatch: pytest.MonkeyPatch):
    """The chunks a read picked are compacted (by the run's own process, on another connection) before their data
    is read: the read picks again and returns every point, not a KeyError or a short series."""
    run_id = store.create_run(name="r", config={})
    log_flushes(store, run_id, flushes=6, size=200)
    expected = [fields(t) for t in store.traces([run_id])]
    real, calls = metrics._fetch_data, []

    def compacting_first(conn, chunk_ids, columns):
        calls.append(len(chunk_ids))
        if len(calls) == 1:
            with Store(store.url) as other:
                other.compact(run_id)  # its own read of the chunks is calls[1]
        return real(conn, chunk_ids, columns)

    monkeypatch.setattr(metrics, "_fetch_data", compacting_first)
    assert [fields(t) for t in store.traces([run_id])] == expected
    assert calls[0] == 18 and calls[-2:] == [3, 0], "picked the old chunks, found them gone, read the new ones"


def test_series_with_the_same_stride_and_start_but_other_lengths_keep_their_own_lengths(store: Store):
    """A constant stride (or one epoch throughout) is the same bytes at any length: decoding it once for a read
    must not hand a 3-point series the 500 steps of another."""
    run_id = store.create_run(name="r", config={})
    batch = MetricBatch()
    batch.add_series("long", list(range(1, 501)), [0] * 500, [0.5] * 500, [1.0] * 500)
    batch.add_series("short", [1, 2, 3], [0, 0, 0], [0.25] * 3, [1.0] * 3)
    store.log_metrics(run_id, batch)
    traces = {t.key: t for t in store.traces([run_id])}
    assert [len(traces["long"].points.step), len(traces["short"].points.step)] == [500, 3]
    assert traces["short"].points.epoch.tolist() == [0, 0, 0] and len(store.metrics_frame([run_id])) == 503
