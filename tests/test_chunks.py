"""Metric chunks: the codec keeps every bit, a flush is one chunk per metric, reads sized to a chart keep what an
exact drawing needs (every bucket's first, last, minimum and maximum, every non-finite point), a zoomed range
comes back at full resolution, and a reader polling while a writer appends only ever sees whole flushes."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.store import Store
from core.store.chunks import GROUP, Points, chunk_row, decode, split_batch
from core.store.metrics import drawing_buckets
from core.store.codec import decode_floats, decode_ints, encode_floats, encode_ints
from core.training.reporting import MetricBatch

SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
           np.array([0x7FF8_0000_0000_0BAD], dtype=np.uint64).view(np.float64)[0],  # a NaN with a payload
           np.array([0xFFF0_0000_0000_0001], dtype=np.uint64).view(np.float64)[0]]  # a signalling NaN, sign set


def bits(a) -> list[int]:
    return np.asarray(a, dtype=np.float64).view(np.uint64).tolist()


# ---------------------------------------------------------------------- the codec
@pytest.mark.parametrize("values", [
    SPECIAL,
    [0.1, 0.2, 0.30000000000000004],  # float64 that float32 cannot hold: kept in 8 bytes
    np.float32(np.linspace(0, 1, 1000)).astype(np.float64).tolist(),  # float32-exact: kept in 4 bytes
    [], [7.0], [math.nan] * 50,
])
def test_floats_round_trip_bit_for_bit(values):
    data = encode_floats(np.array(values, dtype=np.float64))
    assert bits(decode_floats(data, len(values))) == bits(values)


def test_float32_exact_values_take_four_bytes_or_less():
    values = np.float32(np.random.default_rng(0).standard_normal(1000)).astype(np.float64)
    assert len(encode_floats(values)) <= 4 * 1000 + 1
    assert len(encode_floats(values + 1e-12)) > 4 * 1000  # no longer float32-exact: wider, but still exact
    assert bits(decode_floats(encode_floats(values + 1e-12), 1000)) == bits(values + 1e-12)


@pytest.mark.parametrize("values", [
    [0, 1, 2, 3], [5] * 9, [2**62, 2**62 + 1, 2**62 + 3], [-(2**63), 2**63 - 1, 0, -1], [], [42],
    np.cumsum(np.random.default_rng(1).integers(1, 5, 3000)).tolist(),
])
def test_integers_round_trip(values):
    data = encode_ints(np.array(values, dtype=np.int64))
    assert decode_ints(data, len(values)).tolist() == list(values)


def test_regular_steps_cost_a_constant_size():
    assert len(encode_ints(np.arange(10, 1_000_010, dtype=np.int64))) == 17


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True), max_size=300))
def test_any_floats_round_trip(values):
    assert bits(decode_floats(encode_floats(np.array(values, dtype=np.float64)), len(values))) == bits(values)


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=300))
def test_any_integers_round_trip(values):
    assert decode_ints(encode_ints(np.array(values, dtype=np.int64)), len(values)).tolist() == values


# ---------------------------------------------------------------------- chunks
def test_a_flush_splits_into_one_sorted_points_per_key():
    parts = split_batch(["b", "a", "b", "a"], [2, 1, 1, 1], [0, 0, 0, 0], [2.0, 10.0, 1.0, 11.0], [0.2, 0.1, 0.1, 0.1])
    assert list(parts) == ["a", "b"]
    assert parts["a"].step.tolist() == [1, 1] and parts["a"].value.tolist() == [10.0, 11.0]  # as given at one step
    assert parts["b"].step.tolist() == [1, 2] and parts["b"].value.tolist() == [1.0, 2.0]


def test_a_chunk_keeps_its_points_and_a_summary_of_every_group():
    rng = np.random.default_rng(2)
    n = 500
    value = rng.standard_normal(n)
    value[[17, 300]] = [math.nan, math.inf]
    points = Points(np.arange(1, n + 1), np.arange(n) // 25, value, np.cumsum(rng.uniform(0, 1e-3, n)))
    row = chunk_row(points)
    back = decode(row, n)
    assert back.step.tolist() == points.step.tolist() and back.epoch.tolist() == points.epoch.tolist()
    assert bits(back.value) == bits(value) and bits(back.wall_time) == bits(points.wall_time)
    assert (row["step_first"], row["step_last"], row["n_nonfinite"]) == (1, n, 2)
    assert row["v_min"] == np.nanmin(value[np.isfinite(value)]) and row["v_max"] == value[np.isfinite(value)].max()
    summary = decode(row, row["s_n"], summary=True)
    assert 0 < len(summary) <= n // 2
    kept = set(summary.step.tolist())
    assert {18, 301} <= kept  # the NaN and the Inf (steps are index + 1)
    finite = np.where(np.isfinite(value), value, np.nan)
    assert int(np.nanargmin(finite)) + 1 in kept and int(np.nanargmax(finite)) + 1 in kept
    assert {1, n} <= kept


def test_a_short_chunk_has_no_summary():
    row = chunk_row(Points(np.arange(10), np.zeros(10, np.int64), np.ones(10), np.zeros(10)))
    assert row["s_n"] == 0 and row["s_value_data"] is None


# ---------------------------------------------------------------------- reads sized to a chart
@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(f"sqlite:///{tmp_path / 'chunks.db'}") as s:
        yield s


def log_series(store: Store, run_id: int, key: str, values: np.ndarray, *, flush: int = 500, start: int = 1) -> None:
    for first in range(0, values.size, flush):
        part = values[first:first + flush]
        steps = list(range(start + first, start + first + part.size))
        batch = MetricBatch()
        batch.add_series(key, steps, [s // 100 for s in steps], part.tolist(), [s * 0.01 for s in steps])
        store.log_metrics(run_id, batch)


def spiky(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.exp(-np.linspace(0, 4, n)) + 0.05 * rng.standard_normal(n)
    values[rng.choice(n, 5, replace=False)] = rng.uniform(5, 50, 5)  # spikes
    start = int(rng.integers(0, n - 40))
    values[start:start + 30] = math.nan  # a run of NaN
    values[int(rng.integers(0, n))] = math.inf
    return values


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), zoom=st.sampled_from([(1, 20_000), (1, 5_000), (7_321, 9_876), (15_000, 15_900)]),
       width=st.sampled_from([50, 300, 1000]))
def test_a_reduced_read_keeps_every_bucket_extreme_and_every_non_finite_point(tmp_path_factory, seed, zoom, width):
    with Store(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'p.db'}") as store:
        run_id = store.create_run(name="r", config={})
        values = spiky(20_000, seed)
        log_series(store, run_id, "loss", values)
        steps = np.arange(1, values.size + 1)
        lo, hi = zoom
        (trace,) = store.traces([run_id], ["loss"], x_range=(lo, hi), max_points=4 * width)
        got = trace.points
        assert len(got) <= 4 * width + 3 * 32 + np.count_nonzero(~np.isfinite(values[lo - 1:hi]))
        kept = set((got.step - 1).tolist())
        need_nonfinite = set(np.flatnonzero(~np.isfinite(values) & (steps >= lo) & (steps <= hi)).tolist())
        assert need_nonfinite <= kept
        assert {lo - 1, hi - 1} <= kept  # the range's first and last point
        inside = (steps >= lo) & (steps <= hi)
        finite = np.flatnonzero(inside & np.isfinite(values))
        assert int(finite[np.argmin(values[finite])]) in kept and int(finite[np.argmax(values[finite])]) in kept
        # every value read is the stored one, bit for bit, at its own step
        assert bits(got.value) == bits(values[got.step - 1])
        if hi - lo + 1 <= 4 * width:
            assert not trace.reduced and kept == set(range(lo - 1, hi))  # fewer points than the budget: all
            return
        edge, end, count = drawing_buckets(lo, hi, 4 * width, whole_groups=(hi - lo + 1) / width >= GROUP)
        bucket = np.minimum(np.floor((steps - edge) / ((end - edge) / count)).astype(int), count - 1)
        for b in range(count):  # every bucket: its first, last, minimum and maximum point
            members = np.flatnonzero(inside & (bucket == b))
            if not members.size:
                continue
            assert {int(members[0]), int(members[-1])} <= kept, b
            fin = members[np.isfinite(values[members])]
            if fin.size:
                assert int(fin[np.argmin(values[fin])]) in kept and int(fin[np.argmax(values[fin])]) in kept, b


def test_a_zoomed_range_comes_back_at_full_resolution(store: Store):
    run_id = store.create_run(name="r", config={})
    values = spiky(50_000, 3)
    log_series(store, run_id, "loss", values)
    (overview,) = store.traces([run_id], ["loss"], max_points=4000)
    assert overview.reduced and len(overview.points) <= 4000 + 40 and overview.total == 50_000
    (zoomed,) = store.traces([run_id], ["loss"], x_range=(20_001, 21_000), max_points=4000)
    assert not zoomed.reduced and zoomed.points.step.tolist() == list(range(20_001, 21_001))
    assert bits(zoomed.points.value) == bits(values[20_000:21_000])
    in_overview = np.count_nonzero((overview.points.step >= 20_001) & (overview.points.step <= 21_000))
    assert len(zoomed.points) > in_overview  # zooming in shows more points than the overview had there
    (whole,) = store.traces([run_id], ["loss"])
    assert len(whole.points) == 50_000 and bits(whole.points.value) == bits(values)


def test_huge_step_numbers_and_epochs_round_trip(store: Store):
    run_id = store.create_run(name="r", config={})
    batch = MetricBatch()
    batch.add_series("loss", [2**53 + 1, 2**62, 2**62 + 7], [0, 2**31, 2**40], [1.0, -0.0, math.nan], [0.0, 1.0, 2.0])
    store.log_metrics(run_id, batch)
    trace = store.series(run_id, "loss")
    assert trace["step"].tolist() == [2**53 + 1, 2**62, 2**62 + 7] and trace["epoch"].tolist() == [0, 2**31, 2**40]
    assert bits(trace["value"]) == bits([1.0, -0.0, math.nan])


def test_a_reader_polling_while_a_writer_appends_sees_whole_flushes(store: Store):
    run_id = store.create_run(name="live", config={})
    flushes, size, keys = 60, 200, ("train_loss", "grad_norm", "val_loss")
    stop = threading.Event()
    seen: list[tuple[int, ...]] = []
    errors: list[BaseException] = []

    def read() -> None:
        reader = Store(store.url)
        try:
            while not stop.is_set():
                counts = {t.key: len(t.points) for t in reader.traces([run_id], list(keys))}
                seen.append(tuple(counts.get(k, 0) for k in keys))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for f in range(flushes):
            batch = MetricBatch()
            steps = list(range(f * size, (f + 1) * size))
            for key in keys:
                batch.add_series(key, steps, [f] * size, [float(s) for s in steps], [0.0] * size)
            store.log_metrics(run_id, batch)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert len(seen) > 3
    for counts in seen:  # never part of a flush, never one metric of a flush without the others
        assert counts[0] % size == 0 and len(set(counts)) == 1, counts
    assert seen == sorted(seen)  # it only grows
    final = {t.key: t.points for t in store.traces([run_id], list(keys))}
    assert all(final[k].value.tolist() == [float(s) for s in range(flushes * size)] for k in keys)


# ---------------------------------------------------------------------- a flush's blocks, written together
def _block_values(n: int, seed: int) -> np.ndarray:
    """Metric rows of every kind a flush has: float32-exact, float64, with NaN and infinities, all NaN, constant."""
    rng = np.random.default_rng(seed)
    rows = [np.float32(rng.standard_normal(n)).astype(np.float64), rng.standard_normal(n),
            np.float32(np.cumsum(rng.standard_normal(n))).astype(np.float64), np.full(n, math.nan), np.full(n, 0.25),
            np.float32(rng.standard_normal(n) * 1e30).astype(np.float64) ** 2]  # the last overflows to inf
    rows[2][n // 3] = math.nan
    rows[1][-1] = -math.inf
    return np.stack(rows)


@pytest.mark.parametrize("steps", [np.arange(37, 37 + 250), np.arange(0, 500, 2), np.arange(5, 45), np.array([9]),
                                   np.arange(64, 64 + 65), np.array([3, 3, 4, 9, 9, 10] * 20).cumsum()])
def test_chunk_rows_are_chunk_row_of_each_metric(steps):
    steps = np.asarray(steps, dtype=np.int64)
    n = steps.size
    values = _block_values(n, n)
    epochs, walls = steps // 25, np.linspace(0.0, 1.0, n) ** 2
    cache: dict = {}
    got = __import__("core.store.chunks", fromlist=["chunk_rows"]).chunk_rows(values, steps, epochs, walls,
                                                                              time_cache=cache)
    for row, want in zip(got, (chunk_row(Points(steps, epochs, v, walls)) for v in values), strict=True):
        assert row.keys() == want.keys()
        for col in want:  # v_min and v_max as floats, the rest bit for bit
            assert row[col] == want[col] or (row[col] != row[col] and want[col] != want[col]), col
    assert any(row["s_n"] for row in got) == (n > 2 * GROUP)


def test_a_batch_of_blocks_writes_what_the_same_rows_as_lists_write(store: Store):
    """Blocks (a flush's arrays) and the same rows added as lists make the same chunks, byte for byte: blocks
    alone, a block whose metric also has list rows, two blocks of one metric, a block's steps out of order."""
    from sqlalchemy import select

    from core.store.metrics import CHUNKS

    steps, epochs = np.arange(1, 301), np.arange(1, 301) // 30
    walls = np.linspace(0, 3, 300)
    values = _block_values(300, 3)
    keys = [f"m{i}" for i in range(len(values))]
    batches = {"blocks": MetricBatch(), "lists": MetricBatch()}
    batches["blocks"].add("early", 0, 0, 1.5, 0.0)
    batches["blocks"].add_block(keys, values, steps, epochs, walls)
    batches["blocks"].add_block(["val", "m9"], [[0.5, 0.25], [1.0, 2.0]], [30, 60], [0, 1], [0.3, 0.6])
    batches["blocks"].add_block(["val"], [[0.125]], [90], [2], [0.9])  # a metric in two blocks
    batches["blocks"].add_block(["late"], [[3.0, 1.0, 2.0]], [7, 3, 5], [0, 0, 0], [0.7, 0.3, 0.5])  # unsorted
    lists = batches["lists"]
    lists.add("early", 0, 0, 1.5, 0.0)
    for key, row in zip(keys, values):
        lists.add_series(key, steps.tolist(), epochs.tolist(), row.tolist(), walls.tolist())
    lists.add_series("val", [30, 60], [0, 1], [0.5, 0.25], [0.3, 0.6])
    lists.add_series("m9", [30, 60], [0, 1], [1.0, 2.0], [0.3, 0.6])
    lists.add("val", 90, 2, 0.125, 0.9)
    lists.add_series("late", [7, 3, 5], [0, 0, 0], [3.0, 1.0, 2.0], [0.7, 0.3, 0.5])
    assert len(batches["blocks"]) == len(lists) == 1 + values.size + 4 + 1 + 3
    runs = {name: store.create_run(name=name, config={}) for name in batches}
    for name, batch in batches.items():
        store.log_metrics(runs[name], batch)
    with store.engine.connect() as conn:
        chunks = {name: sorted(tuple(v for k, v in row._mapping.items() if k not in ("id", "run_id"))
                               for row in conn.execute(select(CHUNKS).where(CHUNKS.c.run_id == run_id)))
                  for name, run_id in runs.items()}
    assert len(chunks["blocks"]) == len(keys) + 4 and chunks["blocks"] == chunks["lists"]
    late = store.series(runs["blocks"], "late")
    assert late["step"].tolist() == [3, 5, 7] and late["value"].tolist() == [1.0, 2.0, 3.0]
    assert bits(store.series(runs["blocks"], "m2")["value"]) == bits(values[2])
