"""The store on a real PostgreSQL server: migrations applied once when processes open a new database together,
runs and metric chunks, and study cells claimed exactly once by concurrent claimers (on SQLite too)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from core import PROJECT_ROOT
from core.cli.main import main
from core.store import Store
from core.store.database import head_revision
from core.store.leases import CellSpec, Leases
from core.training.reporting import MetricRow


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cells.db'}"
    return request.getfixturevalue("pg_url")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def in_threads(work, n: int) -> None:
    """work(0), ..., work(n - 1), each in its own thread at once; an exception in any of them fails the test."""
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(work, range(n)))


def cells(n: int) -> list[CellSpec]:
    return [CellSpec(position=i, cell=f"[[], {i}]", name=f"cell {i}", config={"seed": i}) for i in range(n)]


def test_migrations_run_once_when_processes_open_a_new_database_together(pg_url):
    child = "import sys; from core.store import Store; Store(sys.argv[1]).close()"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", child, pg_url], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    with Store(pg_url) as store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(head_revision(),)]
        tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
    assert {"runs", "studies", "tags", "metric_keys", "metric_chunks", "study_cells", "alembic_version"} <= tables


def test_runs_and_metric_chunks_round_trip_on_postgresql(pg_url):
    values = [0.5, math.nan, math.inf, -math.inf, -0.0, 5e-324]
    with Store(pg_url) as store:
        run_id = store.create_run(name="pg", config={"lr": 0.1, "hidden": [8]})
        store.log_metrics(run_id, [MetricRow("loss", i, 0, v, 0.25 * i) for i, v in enumerate(values)],
                          progress_step=6)
        store.finish_run(run_id, status="finished", summary={"final": math.nan})
        got = store.series(run_id, "loss")["value"]
        assert [math.copysign(1, v) for v in got] == [math.copysign(1, v) for v in values]
        assert math.isnan(got[1]) and got[2] == math.inf and got[5] == 5e-324
        assert math.isnan(store.get_run(run_id).summary["final"])


def test_a_flush_goes_in_by_one_binary_copy_and_reads_as_sqlites(pg_url, tmp_path, monkeypatch):
    """A flush's chunks go into PostgreSQL by one binary COPY (`cursors.copy_rows`), typed as the table's columns:
    a long series with spikes, NaN, infinities, -0.0 and a subnormal (so its chunk carries a summary), and one of
    NaN alone (no finite minimum: NULL) read back, whole and sized to a chart, exactly as from SQLite, where they
    go in by an executemany."""
    import numpy as np
    from sqlalchemy.exc import IntegrityError

    from core.store import metrics
    from core.training.reporting import MetricBatch

    copies = []
    real = metrics.copy_rows

    def counted(conn, table, columns, rows):
        done = real(conn, table, columns, rows)
        copies.append((conn.dialect.name, len(rows), done))
        return done
    monkeypatch.setattr(metrics, "copy_rows", counted)
    gen = np.random.default_rng(7)
    loss = gen.normal(size=3000)
    loss[::97] *= 50.0
    loss[[5, 700, 2999]] = [math.nan, math.inf, -math.inf]
    loss[[11, 12]] = [-0.0, 5e-324]
    rows = [MetricRow("loss", i, i // 100, float(v), 0.01 * i) for i, v in enumerate(loss)]
    rows += [MetricRow("bad", i, 0, math.nan, 0.5) for i in range(3)]
    read = {}
    for url in (pg_url, f"sqlite:///{tmp_path / 'same.db'}"):
        with Store(url) as store:
            run_id = store.create_run(name="copy", config={"lr": 0.1})
            store.log_metrics(run_id, rows, progress_step=3000)
            read[url] = [store.traces([run_id]), store.traces([run_id], max_points=200)]
            with pytest.raises(IntegrityError), store.engine.begin() as conn:  # as an executemany's would be
                metrics.insert_chunks(conn, [{**row, "run_id": run_id + 99} for row in metrics.chunk_records(
                    conn, run_id, MetricBatch.from_rows(rows[:3]), store._keys, {})])
    # the failed COPY raised before it was counted
    assert copies == [("postgresql", 2, True), ("sqlite", 2, False), ("sqlite", 1, False)]
    (pg_whole, pg_chart), (lite_whole, lite_chart) = read.values()
    (chart,) = [t for t in pg_chart if t.key == "loss"]
    assert chart.reduced and 0 < len(chart.points) < 3000  # the summary was used
    for got, want in zip(pg_whole + pg_chart, lite_whole + lite_chart):
        assert (got.key, got.total, got.reduced) == (want.key, want.total, want.reduced)
        for field in ("step", "epoch", "value", "wall_time"):
            a, b = getattr(got.points, field), getattr(want.points, field)
            assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), (got.key, field)


def test_a_finished_run_compacts_by_one_binary_copy_and_reads_as_before(pg_url, monkeypatch):
    """Compaction's merged chunks go into PostgreSQL by the flush's binary COPY too: a run of 30 flushes is one
    chunk a metric once it finishes, every value (NaN, infinities, -0.0, a subnormal), step, epoch and wall time
    read back bit for bit as before."""
    import numpy as np

    from core.store import metrics
    from core.training.reporting import MetricBatch

    copies = []
    real = metrics.copy_rows

    def counted(conn, table, columns, rows):
        done = real(conn, table, columns, rows)
        copies.append((len(rows), done))
        return done
    monkeypatch.setattr(metrics, "copy_rows", counted)
    gen = np.random.default_rng(3)
    with Store(pg_url) as store:
        run_id = store.create_run(name="compact", config={"lr": 0.1})
        for f in range(30):
            steps = list(range(f * 100, (f + 1) * 100))
            values = gen.normal(size=100)
            values[[1, 2, 3, 4, 5]] = [math.nan, math.inf, -math.inf, -0.0, 5e-324]
            batch = MetricBatch()
            batch.add_series("loss", steps, [s // 250 for s in steps], values.tolist(), [0.01 * s for s in steps])
            batch.add_series("val", [steps[-1]], [f], [float(f)], [1.0 * f])
            store.log_metrics(run_id, batch, progress_step=steps[-1])
        before = store.traces([run_id])
        store.finish_run(run_id, status="finished", summary={})
        after = store.traces([run_id])
        with store.engine.connect() as conn:
            counts = conn.exec_driver_sql("SELECT key_id, count(*) FROM metric_chunks WHERE run_id = %s "
                                          "GROUP BY key_id", (run_id,)).all()
    assert [n for _, n in counts] == [1, 1]
    assert copies[-1] == (2, True) and len(copies) == 31  # 30 flushes of 2 chunks, then the 2 merged ones
    for got, want in zip(after, before, strict=True):
        assert (got.key, got.total) == (want.key, want.total)
        for field in ("step", "epoch", "value", "wall_time"):
            a, b = getattr(got.points, field), getattr(want.points, field)
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (got.key, field)


def test_the_command_line_on_postgresql(pg_url):
    import io

    out, err = io.StringIO(), io.StringIO()
    code = main(["train", "--preset", "article-fixed", "--epochs", "1", "--n-samples", "200", "--json", "--db", pg_url],
                out=out, err=err, env={})
    assert code == 0, err.getvalue()
    out = io.StringIO()
    assert main(["show", "1", "--json", "--db", pg_url], out=out, err=err, env={}) == 0
    assert '"host"' in out.getvalue() and '"status": "finished"' in out.getvalue()


def test_a_claim_takes_each_cell_once_under_concurrent_claimers(url):
    store = Store(url)
    study_id = store.create_study("s", {})
    Leases(store).publish(study_id, cells(12))
    got: list[int] = []
    lock = threading.Lock()

    def claimer(i: int) -> None:
        mine = Store(url)
        leases = Leases(mine)
        while (claim := leases.claim(f"h{i}", study_id=study_id)) is not None:
            with lock:
                got.append(claim.position)

    in_threads(claimer, 4)
    assert sorted(got) == list(range(12))
    assert len(store.list_runs(study_id=study_id)) == 12
    assert Leases(store).counts(study_id)["leased"] == 12


def test_a_group_claim_takes_at_most_the_limit_of_its_first_cells_config(url):
    """A worker claims no bigger a population than the first cell's config allows (`groups.population_limit`:
    wide models, fewer members)."""
    store = Store(url)
    study_id = store.create_study("s", {})
    leases = Leases(store)
    leases.publish(study_id, cells(7))
    limit = lambda config: 2 + config["seed"]  # noqa: E731 - seed 0: 2 cells at most, seed 2: 4
    assert [c.position for c in leases.claim_group("a", study_id=study_id, max_cells=10, limit=limit)] == [0, 1]
    assert [c.position for c in leases.claim_group("b", study_id=study_id, max_cells=3, limit=limit)] == [2, 3, 4]
    # a limit under one still claims the first cell
    assert [c.position for c in leases.claim_group("c", study_id=study_id, max_cells=10, limit=lambda c: 0)] == [5]
    assert leases.counts(study_id)["leased"] == 6


def test_a_group_claim_takes_the_first_cell_and_the_next_ones_that_share_its_group(url):
    store = Store(url)
    study_id = store.create_study("s", {})
    leases = Leases(store)
    leases.publish(study_id, cells(7))
    even = lambda config: config["seed"] % 2  # noqa: E731 - the grouping: seeds of one parity share a model
    first = leases.claim_group("a", study_id=study_id, max_cells=3, same=even, host="h", pid=7)
    assert [c.position for c in first] == [0, 2, 4] and {c.holder for c in first} == {"a"}
    assert sorted(r.id for r in store.list_runs(study_id=study_id)) == sorted(c.run_id for c in first)
    second = leases.claim_group("b", study_id=study_id, max_cells=10, same=even)
    assert [c.position for c in second] == [1, 3, 5]  # its group is the first claimable cell's: odd seeds
    assert [c.position for c in leases.claim_group("c", study_id=study_id, max_cells=10, same=even)] == [6]
    assert leases.claim_group("d", study_id=study_id, max_cells=10, same=even) == []
    assert leases.counts(study_id)["leased"] == 7
    with pytest.raises(ValueError, match="max_cells"):
        leases.claim_group("e", study_id=study_id, max_cells=0)


def test_group_claims_take_each_cell_once_under_concurrent_claimers(url):
    store = Store(url)
    study_id = store.create_study("s", {})
    Leases(store).publish(study_id, cells(24))
    got: list[int] = []
    sizes: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claimer(i: int) -> None:
        leases = Leases(Store(url))
        start.wait()
        while claims := leases.claim_group(f"h{i}", study_id=study_id, max_cells=5, same=lambda c: c["seed"] % 3):
            assert len({c["seed"] % 3 for c in (claim.config for claim in claims)}) == 1
            with lock:
                got.extend(claim.position for claim in claims)
                sizes.append(len(claims))

    in_threads(claimer, 4)
    assert sorted(got) == list(range(24))
    assert len(store.list_runs(study_id=study_id)) == 24
    assert sorted(sizes) == [3, 3, 3, 5, 5, 5]  # group claimers take turns: whole groups of 8 as 5 + 3


def test_workers_starting_one_study_together_publish_its_cells_once(url):
    """Every `core worker --study` publishes the study's cells as it starts: publishers that start together take
    turns, so none fails on the cells another has just written."""
    for attempt in range(5):
        store = Store(url)
        study_id = store.create_study(f"s{attempt}", {})
        start = threading.Barrier(4)
        added: list[int] = []

        def publisher(_: int) -> None:
            leases = Leases(Store(url))
            start.wait()
            added.append(leases.publish(study_id, cells(6)))

        in_threads(publisher, 4)
        assert sorted(added) == [0, 0, 0, 6]
        assert Leases(store).counts(study_id)["open"] == 6


def test_a_dead_holders_lease_is_taken_over_after_its_timeout_and_the_cell_rerun(url):
    clock = Clock()
    store = Store(url, clock=clock)
    study_id = store.create_study("s", {})
    leases = Leases(store, timeout_s=10)
    leases.publish(study_id, cells(1))
    first = leases.claim("dead", study_id=study_id)
    store.start_run(first.run_id, device="cpu", dtype="float32", torch_version="x", total_steps=5)
    clock.now += timedelta(seconds=9)
    assert leases.claim("other", study_id=study_id) is None  # still alive
    clock.now += timedelta(seconds=2)
    second = leases.claim("other", study_id=study_id)
    assert second is not None and second.position == 0 and second.attempt == 2
    assert [r.id for r in store.list_runs(study_id=study_id)] == [second.run_id]  # the dead holder's run went
    assert not leases.beat(first) and leases.beat(second)
    store.finish_run(second.run_id, status="finished", summary={})
    assert leases.release(first) is None and leases.release(second) == "done"
    assert leases.counts(study_id) | {} == {"open": 0, "leased": 0, "done": 1, "stopped": 0, "claimable": 0,
                                            "total": 1}


def test_a_cancelled_run_stops_the_study_until_it_is_reopened(url):
    store = Store(url)
    study_id = store.create_study("s", {})
    leases = Leases(store)
    leases.publish(study_id, cells(3))
    claim = leases.claim("h", study_id=study_id)
    store.finish_run(claim.run_id, status="cancelled", summary={})
    assert leases.release(claim) == "stopped"
    assert leases.claim("h", study_id=study_id) is None and leases.counts(study_id)["stopped"] == 3
    assert leases.reopen(study_id) == 3
    again = leases.claim("h", study_id=study_id)
    assert again.position == 0 and claim.run_id not in {r.id for r in store.list_runs()}


def test_a_result_stored_by_a_holder_that_died_is_kept(url):
    clock = Clock()
    store = Store(url, clock=clock)
    study_id = store.create_study("s", {})
    leases = Leases(store, timeout_s=5)
    leases.publish(study_id, cells(1))
    claim = leases.claim("h", study_id=study_id)
    store.finish_run(claim.run_id, status="finished", summary={})  # and died before handing the cell back
    clock.now += timedelta(seconds=60)
    assert leases.claim("other", study_id=study_id) is None
    assert leases.counts(study_id)["done"] == 1 and store.get_run(claim.run_id).status == "finished"
