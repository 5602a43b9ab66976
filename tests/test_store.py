"""The run store: schema and migrations, round trips of every field, metrics, edits, crash safety."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy.exc
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text

import core.store
from core import PROJECT_ROOT
from core.store import (INTERRUPTED_ERROR, STATUSES, Run, RunNotFound, Store, StoreReporter, StudyNotFound, default_url,
                        pid_alive)
from core.store.database import alembic_config, head_revision, make_engine
from core.store.schema import Base
from core.store.sqlstore import REUSED_AFTER_S
from core.store.codec import decode_floats
from core.training.reporting import MetricBatch, MetricRow, RunInfo, RunResult

UTC = timezone.utc
T0 = datetime(2025, 3, 4, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))  # 05:08:09.123456 UTC


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of the store through its interface run on SQLite and on PostgreSQL (a real server, tests/pg.py);
    the ones that read the SQLite file directly (they take `db_path`) on SQLite only."""
    import inspect

    if "store" in metafunc.fixturenames and "db_path" not in inspect.signature(metafunc.function).parameters:
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def store(db_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest):
    url = f"sqlite:///{db_path}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    with Store(url, clock=clock) as s:
        yield s


def raw(db_path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA foreign_keys=ON")
    return con


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def rows(key: str, values: list[float], start: int = 0, epoch: int = 0) -> list[MetricRow]:
    return [MetricRow(key, start + i, epoch, v, 0.5 * (start + i)) for i, v in enumerate(values)]


# --------------------------------------------------------------------------------------------- urls, engine


def test_default_url_without_env_is_the_project_file() -> None:
    assert default_url({}, root=Path("/srv/lossboard")) == "sqlite:////srv/lossboard/experiments.db"
    assert default_url({"LOSSBOARD_DB": ""}, root=Path("/srv/lossboard")) == "sqlite:////srv/lossboard/experiments.db"
    assert default_url({}) == f"sqlite:///{PROJECT_ROOT}/experiments.db"


def test_default_url_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_url({"LOSSBOARD_DB": "sqlite:////data/x.db"}) == "sqlite:////data/x.db"
    assert default_url({"LOSSBOARD_DB": "postgresql://u@h/db"}) == "postgresql://u@h/db"
    assert default_url({"LOSSBOARD_DB": "/data/runs.db"}) == "sqlite:////data/runs.db"
    monkeypatch.chdir(tmp_path)
    assert default_url({"LOSSBOARD_DB": "rel/runs.db"}) == f"sqlite:///{tmp_path}/rel/runs.db"


def test_store_opens_the_env_database_and_creates_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "e.db"
    with Store(env={"LOSSBOARD_DB": str(target)}) as s:
        assert s.url == f"sqlite:///{target}"
        run_id = s.create_run(name="env", config={})
    assert target.exists()
    assert raw(target).execute("SELECT name FROM runs WHERE id = ?", (run_id,)).fetchone() == ("env",)


def test_sqlite_pragmas_are_set_on_every_connection(store: Store, db_path: Path) -> None:
    with store.engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 30000
        assert pragma("synchronous") == 1  # NORMAL
    assert sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persisted in the file


def test_make_engine_in_memory_and_store_on_it() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
    with Store("sqlite://") as s:
        run_id = s.create_run(name="mem", config={"a": 1})
        assert s.get_run(run_id).config == {"a": 1}


# --------------------------------------------------------------------------------------------- migrations


def test_migrations_from_an_empty_database_create_every_table_at_head(store: Store, db_path: Path) -> None:
    con = raw(db_path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "runs", "metric_chunks", "metric_keys", "tags", "studies"} <= tables
    assert "metrics" not in tables  # the row table of revision 0001, converted to chunks by 0002
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == head_revision() == "0003"
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
    index = [r[2] for r in con.execute("PRAGMA index_info('ix_metric_chunks_run_key_step')")]
    assert index == ["run_id", "key_id", "step_first"]
    fks = {(r[2], r[3], r[6]) for r in con.execute("PRAGMA foreign_key_list('metric_chunks')")}
    assert fks == {("runs", "run_id", "CASCADE"), ("metric_keys", "key_id", "NO ACTION")}
    assert {(r[2], r[6]) for r in con.execute("PRAGMA foreign_key_list('runs')")} == {("studies", "SET NULL")}
    # the ORM models and the migrated schema agree
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_reopening_keeps_data_and_needs_no_write_lock(db_path: Path, clock: FakeClock) -> None:
    with Store(f"sqlite:///{db_path}", clock=clock) as s:
        run_id = s.create_run(name="keep me", config={"lr": 0.1})
        s.log_metrics(run_id, rows("loss", [1.0, 2.0]))
    writer = sqlite3.connect(db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process is writing right now
    opened: list[Store] = []
    thread = threading.Thread(target=lambda: opened.append(Store(f"sqlite:///{db_path}", clock=clock)))
    started = time.perf_counter()
    thread.start()
    thread.join(10)
    writer.rollback()
    assert opened, "reopening a migrated database waited for the write lock"
    assert time.perf_counter() - started < 5
    again = opened[0]
    assert again.get_run(run_id).name == "keep me"
    assert again.series(run_id, "loss")["value"].tolist() == [1.0, 2.0]
    assert raw(db_path).execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    again.close()


SLOW_MIGRATION = textwrap.dedent("""
    import time
    import core.store
    _real_upgrade = core.store.database.command.upgrade

    def _slow_upgrade(config, revision, **kw):  # widen the window in which a second opener could collide
        _real_upgrade(config, revision, **kw)
        time.sleep(0.5)

    core.store.database.command.upgrade = _slow_upgrade
""")


def test_concurrent_first_open_from_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/procs.db"
    child = SLOW_MIGRATION + textwrap.dedent("""
        import sys
        from core.store import Store
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        store = Store(sys.argv[1])
        print(store.create_run(name="p", config={}))
    """)
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", child, url, str(start)], env=subprocess_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in results]
    assert sorted(int(out) for out, _ in results) == [1, 2, 3, 4]
    assert raw(tmp_path / "procs.db").execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]


def test_concurrent_first_open_from_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace: dict[str, object] = {}
    exec(SLOW_MIGRATION.replace("core.store.database.command.upgrade = _slow_upgrade", ""), namespace)
    monkeypatch.setattr(core.store.database.command, "upgrade", namespace["_slow_upgrade"])
    urls = [f"sqlite:///{tmp_path}/same.db"] * 3 + [f"sqlite:///{tmp_path}/other{i}.db" for i in range(2)]
    errors: list[BaseException] = []
    stores: list[Store] = []

    def open_store(url: str) -> None:
        try:
            stores.append(Store(url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store, args=(url,)) for url in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(stores) == 5
    for s in stores:
        s.create_run(name="r", config={})
        s.close()
    for name, runs in (("same", 3), ("other0", 1), ("other1", 1)):
        con = raw(tmp_path / f"{name}.db")
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (runs,)


# --------------------------------------------------------------------------------------------- runs


def test_every_run_field_round_trips(store: Store, clock: FakeClock) -> None:
    config = {"lr": 0.01, "hidden": (32, 16), "noise": math.nan, "clip": math.inf, "name": "ünï",
              "nested": {"a": [1]}}
    run_id = store.create_run(name="first", config=config)
    created = clock.now
    started = clock.advance(1.5)
    store.start_run(run_id, device="cuda:0", dtype="bfloat16", torch_version="2.13.0", total_steps=400, pid=4242,
                    host="box")
    beat = clock.advance(2.25)
    store.log_metrics(run_id, rows("train_loss", [0.7, 0.6]), progress_step=120)
    store.request_cancel(run_id)
    store.add_tag(run_id, "zeta")
    store.add_tag(run_id, "alpha")
    store.set_notes(run_id, "line one\nline two")
    finished = clock.advance(3.0)
    summary = {"final_val_loss": math.nan, "best": math.inf, "worst": -math.inf, "acc": 0.75, "steps": 120}
    store.finish_run(run_id, status="cancelled", summary=summary, error="stopped by the user", wall_time_s=6.75)

    run = store.get_run(run_id)
    assert run.id == run_id and run.name == "first" and run.status == "cancelled"
    assert run.config["lr"] == 0.01 and run.config["hidden"] == [32, 16] and run.config["name"] == "ünï"
    assert math.isnan(run.config["noise"]) and run.config["clip"] == math.inf and run.config["nested"] == {"a": [1]}
    assert math.isnan(run.summary["final_val_loss"])
    assert (run.summary["best"], run.summary["worst"], run.summary["acc"], run.summary["steps"]) == (
        math.inf, -math.inf, 0.75, 120)
    assert run.created_at == created and run.started_at == started
    assert run.heartbeat_at == beat and run.finished_at == finished
    for stamp in (run.created_at, run.started_at, run.heartbeat_at, run.finished_at):
        assert stamp.tzinfo == UTC
    assert run.created_at.hour == 5 and run.created_at.microsecond == 123456  # stored as UTC
    assert (run.error, run.device, run.dtype, run.torch_version) == ("stopped by the user", "cuda:0", "bfloat16",
                                                                     "2.13.0")
    assert (run.wall_time_s, run.pid, run.host, run.total_steps, run.progress_step) == (6.75, 4242, "box", 400, 120)
    assert run.cancel_requested is True and run.notes == "line one\nline two" and run.study_id is None
    assert run.tags == ("alpha", "zeta")
    assert run.duration_s == 6.75


def test_new_run_defaults(store: Store, clock: FakeClock) -> None:
    run = store.get_run(store.create_run(name="fresh", config={}))
    assert run == Run(id=run.id, name="fresh", status="running", config={}, summary={}, created_at=clock.now)
    assert run.progress_step == 0 and run.notes == "" and run.cancel_requested is False and run.tags == ()
    assert run.duration_s is None


def test_duration_falls_back_to_timestamps() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    base = dict(id=1, name="r", status="running", created_at=start, started_at=start)
    assert Run(**base, heartbeat_at=start + timedelta(seconds=4)).duration_s == 4.0
    ended = Run(**base, heartbeat_at=start + timedelta(seconds=4), finished_at=start + timedelta(seconds=9))
    assert ended.duration_s == 9.0
    assert Run(**base, finished_at=start + timedelta(seconds=9), wall_time_s=2.5).duration_s == 2.5
    assert Run(id=1, name="r", status="running", created_at=start).duration_s is None


def test_heartbeat_and_cancel_flags(store: Store, clock: FakeClock) -> None:
    run_id = store.create_run(name="r", config={})
    assert store.is_cancel_requested(run_id) is False
    store.heartbeat(run_id)
    assert store.get_run(run_id).heartbeat_at == clock.now
    beat = clock.advance(10)
    store.heartbeat(run_id)
    assert store.get_run(run_id).heartbeat_at == beat
    store.request_cancel(run_id)
    assert store.is_cancel_requested(run_id) is True


def test_cancel_requests_are_the_flagged_runs_of_one_study(store: Store) -> None:
    study, other = store.create_study("s", {}), store.create_study("t", {})
    a, b, c = store.create_runs([("a", {}), ("b", {}), ("c", {})], study_id=study)
    (d,) = store.create_runs([("d", {})], study_id=other)
    assert store.cancel_requests(study) == set()
    for run_id in (a, c, d):
        store.request_cancel(run_id)
    store.finish_run(c, status="cancelled", summary={}, error=None, wall_time_s=1.0)
    assert store.cancel_requests(study) == {a, c} and store.cancel_requests(other) == {d}
    assert store.cancel_requests(study, status="running") == {a}
    with pytest.raises(ValueError, match="status"):
        store.cancel_requests(study, status="paused")


def test_cancel_flags_and_reporters_asking_many_at_once(store: Store, tmp_path: Path) -> None:
    """`Store.cancel_flags` reads many runs' flags in one query; `StoreReporter.should_stop_many` answers as each
    `should_stop` would, one query per store, and marks a deleted run's reporter; `CellReporter.should_stop_many`
    stops a cell whose lease is lost without asking."""
    from core.jobs.cells import CellReporter
    from core.store.reporter import StoreReporter

    a, b, c = (store.create_run(name=n, config={}) for n in "abc")
    store.request_cancel(b)
    assert store.cancel_flags([a, b, a, 999]) == {a: False, b: True} and store.cancel_flags([]) == {}
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    d = other.create_run(name="d", config={})
    other.request_cancel(d)
    reporters = [StoreReporter(store, run_id) for run_id in (a, b, c)] + [StoreReporter(other, d)]
    store.delete_run(c)
    each = [StoreReporter(r.store, r.run_id).should_stop() for r in reporters]
    assert StoreReporter.should_stop_many(reporters) == each == [False, True, True, True]
    assert [r.deleted for r in reporters] == [False, False, True, False]
    assert StoreReporter.should_stop_many(reporters) == each  # a deleted run is not asked again
    lost = threading.Event()
    cells = [CellReporter(store, run_id, pid=1, host="h", lease_lost=event, record_within_s=0.0)
             for run_id, event in ((a, threading.Event()), (b, threading.Event()), (a, lost))]
    lost.set()
    assert CellReporter.should_stop_many(cells) == [False, True, True]
    rows = [MetricBatch.from_rows([MetricRow("loss", 5, 0, float(i), 0.1)]) for i in range(3)]
    assert CellReporter.on_metrics_many(cells, rows, [5, 5, 5]) == [True, True, True]
    assert [c.stored_step for c in cells] == [5, 5, 0]  # the cell whose lease is lost wrote nothing
    assert store.series(a, "loss")["value"].tolist() == [0.0] and store.series(b, "loss")["value"].tolist() == [1.0]
    gone = sqlalchemy.exc.OperationalError("SELECT", {}, type("OperationalError", (Exception,), {})("gone"))
    store.cancel_flags = lambda ids: (_ for _ in ()).throw(gone)  # the server went away as they asked
    assert CellReporter.should_stop_many(cells) == [True, True, True]
    assert cells[0].lost is gone and cells[1].lost is gone and cells[2].lost is None
    ended = RunResult(status="finished", summary={"k": 1}, error=None, wall_time_s=1.0)
    fresh = [CellReporter(store, run_id, pid=1, host="h", lease_lost=threading.Event(), record_within_s=0.0)
             for run_id in (a, b)]
    assert CellReporter.on_finish_many(cells + fresh, [ended] * 5) == [False, False, True, True, True]
    assert [store.get_run(i).status for i in (a, b)] == ["finished", "finished"]  # the lost ones: their own on_finish
    other.close()


def test_log_metrics_many_writes_what_log_metrics_writes_in_one_transaction(store: Store) -> None:
    """Each run's chunks as `log_metrics` writes them, its heartbeat and progress (a step each, or kept); a run
    that does not exist is reported and the others written; a bad batch writes nothing for any run."""
    from sqlalchemy import select

    from core.store.metrics import CHUNKS
    from core.store.reporter import StoreReporter

    def batch(seed: int) -> MetricBatch:
        b = MetricBatch()
        rng = np.random.default_rng(seed)
        b.add_block(["loss", "grad_norm"], rng.standard_normal((2, 80)), np.arange(1, 81), np.arange(80) // 20,
                    np.linspace(0, 1, 80))
        b.add("val_loss", 80, 3, 0.5, 1.0)
        return b

    def chunks_of(run_id: int) -> list[tuple]:
        with store.engine.connect() as conn:
            return sorted(tuple(v for k, v in row._mapping.items() if k not in ("id", "run_id"))
                          for row in conn.execute(select(CHUNKS).where(CHUNKS.c.run_id == run_id)))

    one, many_a, many_b, kept = (store.create_run(name=n, config={}) for n in ("one", "a", "b", "kept"))
    store.log_metrics(kept, [], progress_step=7)
    store.log_metrics(one, batch(1), progress_step=80)
    assert store.log_metrics_many([(many_a, batch(1), 80), (999, batch(2), 80), (many_b, batch(2), 40),
                                   (kept, batch(3), None)]) == {999}
    assert chunks_of(many_a) == chunks_of(one) and len(chunks_of(many_b)) == 3 and chunks_of(many_b) != chunks_of(one)
    runs = {r.id: r for r in store.get_runs([one, many_a, many_b, kept])}
    assert [runs[i].progress_step for i in (many_a, many_b, kept)] == [80, 40, 7] and len(chunks_of(kept)) == 3
    bad = MetricBatch()
    bad.add("", 1, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="metric key"):
        store.log_metrics_many([(many_a, batch(4), 90), (many_b, bad, 90)])
    assert len(chunks_of(many_a)) == 3 and store.get_run(many_a).progress_step == 80  # nothing of it kept
    reporters = [StoreReporter(store, many_a), StoreReporter(store, 999)]
    assert StoreReporter.on_metrics_many(reporters, [batch(5), batch(6)], [100, 100]) == [True, True]
    assert [r.deleted for r in reporters] == [False, True] and len(chunks_of(many_a)) == 6
    broken = StoreReporter(Store(store.url), many_b)
    broken.store.log_metrics_many = lambda items: (_ for _ in ()).throw(RuntimeError("down"))
    assert StoreReporter.on_metrics_many([reporters[0], broken], [batch(7), batch(8)], [110, 110]) == [True, False]
    assert len(chunks_of(many_b)) == 3  # the caller sends it on its own
    broken.store.close()


def test_start_and_finish_many_runs_in_one_transaction_each(store: Store) -> None:
    """`start_runs` and `finish_runs` do what `start_run` and `finish_run` do, for many runs, and report the runs
    that do not exist; a bad status writes nothing; the ends compact exactly the runs `compact_run` would change
    (`runs_to_compact`, from one query)."""
    from core.store.metrics import PAYING_CHUNKS, runs_to_compact
    from core.store.reporter import StoreReporter

    ids = [store.create_run(name=f"r{i}", config={}) for i in range(3)]
    assert store.start_runs([ids[0], ids[1], 999], device="cpu", dtype="float32", torch_version="2", total_steps=9,
                            pid=4, host="h") == {999}
    runs = store.get_runs(ids)
    assert [r.total_steps for r in runs] == [9, 9, None] and runs[0].pid == 4 and runs[0].started_at is not None
    for step in range(PAYING_CHUNKS + 2):  # run 0: more chunks than pay to keep; run 1: one
        store.log_metrics(ids[0], [MetricRow("loss", step, 0, float(step), 0.0)])
    store.log_metrics(ids[1], [MetricRow("loss", 0, 0, 1.0, 0.0)])
    with store.engine.connect() as conn:
        assert runs_to_compact(conn, ids + [999]) == [ids[0]]
    with pytest.raises(ValueError, match="status"):
        store.finish_runs([(ids[0], "finished", {}, None, 1.0), (ids[1], "done", {}, None, 1.0)])
    assert store.get_run(ids[0]).status == "running"
    assert store.finish_runs([(ids[0], "finished", {"x": math.nan}, None, 1.5), (999, "failed", {}, "e", None),
                              (ids[1], "diverged", {"y": 2}, "boom", 2.5)]) == {999}
    a, b, _ = store.get_runs(ids)
    assert (a.status, b.status, b.error, b.summary, a.wall_time_s) == ("finished", "diverged", "boom", {"y": 2}, 1.5)
    assert math.isnan(a.summary["x"]) and a.finished_at is not None
    with store.engine.connect() as conn:
        assert runs_to_compact(conn, ids) == []  # compacted by its end
    assert store.series(ids[0], "loss")["value"].tolist() == [float(s) for s in range(PAYING_CHUNKS + 2)]
    reporters = [StoreReporter(store, ids[2]), StoreReporter(store, 999)]
    info = RunInfo(device="cpu", dtype="float32", torch_version="2", total_steps=3)
    assert StoreReporter.on_start_many(reporters, info) == [True, False]  # the caller starts 999 alone (and fails)
    result = RunResult(status="cancelled", summary={}, error="x", wall_time_s=0.5)
    assert StoreReporter.on_finish_many(reporters, [result, result]) == [True, True]
    assert store.get_run(ids[2]).status == "cancelled" and reporters[1].deleted


def test_attach_process_before_the_trainer_starts(store: Store, clock: FakeClock) -> None:
    run_id = store.create_run(name="launched", config={})
    store.attach_process(run_id, pid=31337, host="here")
    run = store.get_run(run_id)
    assert (run.pid, run.host, run.started_at) == (31337, "here", None)
    assert store.mark_interrupted(host="here", pid_alive=lambda pid: pid != 31337) == [run_id]  # died at start-up
    other = store.create_run(name="launched too", config={})
    store.attach_process(other, pid=4, host="here")
    store.start_run(other, device="cpu", dtype="float32", torch_version="2", total_steps=3)  # pid not known there
    assert (store.get_run(other).pid, store.get_run(other).host) == (4, "here")
    with pytest.raises(RunNotFound):
        store.attach_process(999, pid=1, host="h")


def test_runs_created_and_read_in_one_query_each(store: Store) -> None:
    study_id = store.create_study("batch", {})
    ids = store.create_runs([("a", {"lr": 0.1}), ("b", {"lr": 0.2})], study_id=study_id, pid=77, host="here")
    runs = store.get_runs([ids[1], 999, ids[0], ids[1]])  # missing ids left out, each once, in the order asked
    assert [r.id for r in runs] == [ids[1], ids[0]]
    assert [(r.name, r.config["lr"], r.status, r.pid, r.host, r.study_id) for r in runs] == [
        ("b", 0.2, "running", 77, "here", study_id), ("a", 0.1, "running", 77, "here", study_id)]
    assert store.get_runs([]) == [] and len(store.get_runs(list(range(1, 2500)))) == 2  # past one query's ids
    with pytest.raises(StudyNotFound):
        store.create_runs([("c", {})], study_id=12345)
    with pytest.raises(ValueError):
        store.create_runs([("  ", {})])
    assert len(store.list_runs()) == 2  # a refused batch adds nothing


def test_one_store_shared_by_threads(store: Store) -> None:
    run_ids = [store.create_run(name=f"t{i}", config={}) for i in range(4)]
    errors: list[BaseException] = []

    def work(run_id: int) -> None:
        try:
            for batch in range(20):
                store.log_metrics(run_id, rows("loss", [float(batch)] * 10, start=batch * 10), progress_step=batch)
                store.list_runs()
                store.metrics_frame(run_ids)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(run_id,)) for run_id in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    frame = store.metrics_frame(run_ids)
    assert frame.groupby("run_id").size().tolist() == [200] * 4
    assert [store.get_run(r).progress_step for r in run_ids] == [19] * 4


def test_naive_clock_is_refused(db_path: Path) -> None:
    with Store(f"sqlite:///{db_path}", clock=lambda: datetime(2025, 1, 1)) as s:
        with pytest.raises(ValueError, match="naive"):
            s.create_run(name="r", config={})


def test_invalid_statuses_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="running, finished, diverged, failed, cancelled, interrupted"):
        store.create_run(name="r", config={}, status="bogus")
    run_id = store.create_run(name="r", config={}, status="finished")
    with pytest.raises(ValueError, match="'running' is not one of finished"):
        store.finish_run(run_id, status="running", summary={})
    with pytest.raises(ValueError, match="bogus"):
        store.list_runs(status=["finished", "bogus"])


def test_status_check_constraint_at_the_database_level(store: Store, db_path: Path) -> None:
    insert = ("INSERT INTO runs (name, status, config_json, created_at) VALUES ('x', '{}', '{{}}', "
              "'2025-01-01 00:00:00.000000')")
    con = raw(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="ck_runs_status"):
        con.execute(insert.format("bogus"))
    for status in STATUSES:
        con.execute(insert.format(status))
    con.commit()
    with store.engine.connect() as conn, pytest.raises(sqlalchemy.exc.IntegrityError):
        conn.execute(text(insert.format("exploded")))
    assert store.counts() == {s: 1 for s in STATUSES}


def test_run_not_found_everywhere(store: Store) -> None:
    with pytest.raises(RunNotFound) as info:
        store.get_run(999)
    assert str(info.value) == "no run with id 999" and info.value.run_id == 999
    assert isinstance(info.value, KeyError)
    calls = [
        lambda: store.start_run(999, device="cpu", dtype="float32", torch_version="2", total_steps=1),
        lambda: store.log_metrics(999, rows("loss", [1.0])),
        lambda: store.finish_run(999, status="finished", summary={}),
        lambda: store.heartbeat(999),
        lambda: store.request_cancel(999),
        lambda: store.is_cancel_requested(999),
        lambda: store.rename_run(999, "x"),
        lambda: store.set_notes(999, "x"),
        lambda: store.add_tag(999, "x"),
        lambda: store.remove_tag(999, "x"),
        lambda: store.set_tags(999, ["x"]),
        lambda: store.delete_run(999),
        lambda: store.metric_keys(999),
        lambda: store.series(999, "loss"),
    ]
    for call in calls:
        with pytest.raises(RunNotFound, match="^no run with id 999$"):
            call()


def test_list_runs_newest_first_with_filters_and_no_n_plus_1(store: Store, clock: FakeClock) -> None:
    study = store.create_study("grid", {"lr": [0.1, 0.01]})
    ids = []
    for i in range(12):
        clock.advance(1)
        ids.append(store.create_run(name=f"r{i}", config={"i": i}, status="finished" if i % 3 else "running",
                                    study_id=study if i < 4 else None))
        store.set_tags(ids[-1], [f"t{i}", "all"])
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    listed = store.list_runs()
    assert len(statements) == 2  # the runs, then all their tags
    assert [r.id for r in listed] == ids[::-1]
    assert listed[0].tags == ("all", "t11") and listed[-1].config == {"i": 0}
    assert [r.name for r in store.list_runs(status="running")] == ["r9", "r6", "r3", "r0"]
    assert len(store.list_runs(status=["running", "finished"])) == 12
    assert store.list_runs(status=("diverged",)) == []
    assert [r.name for r in store.list_runs(study_id=study)] == ["r3", "r2", "r1", "r0"]
    assert [r.name for r in store.list_runs(limit=2)] == ["r11", "r10"]
    assert store.counts() == {"running": 4, "finished": 8, "diverged": 0, "failed": 0, "cancelled": 0,
                              "interrupted": 0}


def test_tags_notes_and_rename(store: Store) -> None:
    run_id = store.create_run(name="r", config={})
    store.add_tag(run_id, "b")
    store.add_tag(run_id, " a ")
    store.add_tag(run_id, "b")  # idempotent
    assert store.get_run(run_id).tags == ("a", "b")
    store.remove_tag(run_id, "b")
    store.remove_tag(run_id, "never there")
    assert store.get_run(run_id).tags == ("a",)
    store.set_tags(run_id, ["z", "y", "z"])
    assert store.get_run(run_id).tags == ("y", "z")
    store.set_tags(run_id, [])
    assert store.get_run(run_id).tags == ()
    for blank in ("", "   "):
        with pytest.raises(ValueError, match="tag must not be empty"):
            store.add_tag(run_id, blank)
        with pytest.raises(ValueError, match="run name must not be empty"):
            store.rename_run(run_id, blank)
    with pytest.raises(ValueError):
        store.set_tags(run_id, ["ok", " "])
    assert store.get_run(run_id).tags == ()
    store.rename_run(run_id, "  better name ")
    store.set_notes(run_id, "lr too high?")
    run = store.get_run(run_id)
    assert (run.name, run.notes) == ("better name", "lr too high?")
    store.set_notes(run_id, "")
    assert store.get_run(run_id).notes == ""


def test_delete_cascades_to_metrics_and_tags(store: Store, db_path: Path) -> None:
    gone, kept = store.create_run(name="gone", config={}), store.create_run(name="kept", config={})
    for run_id in (gone, kept):
        store.log_metrics(run_id, rows("loss", [1.0, math.nan, 3.0]))
        store.set_tags(run_id, ["x", "y"])
    store.delete_run(gone)
    con = raw(db_path)
    def count(table: str, run_id: int) -> int:
        return con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()[0]

    assert (count("metric_chunks", gone), count("tags", gone)) == (0, 0)
    assert (count("metric_chunks", kept), count("tags", kept)) == (1, 2)  # one chunk: one flush of one metric
    assert con.execute("SELECT count(*) FROM runs WHERE id = ?", (gone,)).fetchone() == (0,)
    with pytest.raises(RunNotFound):
        store.get_run(gone)
    with pytest.raises(RunNotFound, match=f"no run with id {gone}"):
        store.delete_run(gone)
    assert store.create_run(name="new", config={}) == kept + 1  # ids of deleted runs are never reused


def test_deleting_a_study_unlinks_its_runs(store: Store, db_path: Path) -> None:
    study = store.create_study("s", {})
    run_id = store.create_run(name="r", config={}, study_id=study)
    with raw(db_path) as con:
        con.execute("DELETE FROM studies WHERE id = ?", (study,))
    assert store.get_run(run_id).study_id is None


# --------------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("columns", [False, True], ids=["rows", "batch"])
def test_nan_and_inf_metric_values_round_trip(store: Store, db_path: Path, columns: bool) -> None:
    # the trainer hands over a MetricBatch; a list of rows is accepted too
    run_id = store.create_run(name="r", config={})
    payload_nan = np.array([0x7FF8_0000_0000_0BAD], dtype=np.uint64).view(np.float64)[0]
    values = [1.5, math.nan, math.inf, -math.inf, 0.0, -0.0, -2.0e-300, 1.0e300, 5e-324, payload_nan]
    batch = rows("loss", values)
    store.log_metrics(run_id, MetricBatch.from_rows(batch) if columns else batch, progress_step=7)
    n, blob = raw(db_path).execute("SELECT n, value_data FROM metric_chunks").fetchone()
    stored = decode_floats(blob, n)  # the bits on disk are the bits logged: -0.0, the subnormal, the NaN payload
    assert stored.view(np.uint64).tolist() == np.array(values, dtype=np.float64).view(np.uint64).tolist()
    trace = store.series(run_id, "loss")
    assert trace["value"].view(np.uint64).tolist() == np.array(values).view(np.uint64).tolist()
    np.testing.assert_array_equal(trace["value"], np.array(values))  # NaN compares equal here
    assert math.isnan(trace["value"][1]) and trace["value"][2] == math.inf and trace["value"][3] == -math.inf
    frame = store.metrics_frame([run_id])
    np.testing.assert_array_equal(frame["value"].to_numpy(), np.array(values))
    assert store.get_run(run_id).progress_step == 7


def test_metrics_frame_ordering_and_dtypes(store: Store) -> None:
    a, b, c = (store.create_run(name=n, config={}) for n in "abc")
    store.log_metrics(b, [MetricRow("val_loss", 20, 1, 0.2, 2.0), MetricRow("train_loss", 10, 0, 0.9, 1.0)])
    store.log_metrics(a, [MetricRow("z", 5, 0, 5.0, 0.5), MetricRow("a", 9, 1, 9.0, 0.9),
                          MetricRow("a", 3, 0, math.nan, 0.3)])
    store.log_metrics(c, rows("other", [1.0]))
    frame = store.metrics_frame([b, a, 999])
    assert list(frame.columns) == ["run_id", "key", "step", "epoch", "value", "wall_time"]
    assert [str(t) for t in frame.dtypes] == ["int64", "str", "int64", "int64", "float64", "float64"]
    assert list(zip(frame.run_id, frame.key, frame.step)) == [(a, "a", 3), (a, "a", 9), (a, "z", 5),
                                                              (b, "train_loss", 10), (b, "val_loss", 20)]
    assert frame.epoch.tolist() == [0, 1, 0, 0, 1] and frame.wall_time.tolist() == [0.3, 0.9, 0.5, 1.0, 2.0]
    assert math.isnan(frame.value[0]) and frame.value.tolist()[1:] == [9.0, 5.0, 0.9, 0.2]
    only = store.metrics_frame([a, b], keys=["a", "val_loss", "missing"])
    assert list(zip(only.run_id, only.key, only.step)) == [(a, "a", 3), (a, "a", 9), (b, "val_loss", 20)]
    for empty in (store.metrics_frame([]), store.metrics_frame([a], keys=[]), store.metrics_frame([999])):
        assert len(empty) == 0 and list(empty.columns) == list(frame.columns)
        assert [str(t) for t in empty.dtypes] == ["int64", "str", "int64", "int64", "float64", "float64"]


def test_metrics_frame_with_many_runs(store: Store) -> None:
    ids = [store.create_run(name=f"r{i}", config={}) for i in range(core.store.cursors.CHUNK + 20)]  # more than one IN list
    for run_id in ids[::-1]:
        store.log_metrics(run_id, [MetricRow("loss", 1, 0, float(run_id), 0.0)])
    frame = store.metrics_frame(ids)
    assert frame.run_id.tolist() == ids and frame.value.tolist() == [float(i) for i in ids]


def test_series_and_metric_keys(store: Store) -> None:
    run_id = store.create_run(name="r", config={})
    store.log_metrics(run_id, rows("val_loss", [3.0, 2.0], start=0, epoch=0) + rows("grad_norm/fc0", [0.1]))
    store.log_metrics(run_id, [MetricRow("val_loss", 4, 1, 1.0, 9.0), MetricRow("val_loss", 2, 1, 1.5, 8.0)])
    assert store.metric_keys(run_id) == ["grad_norm/fc0", "val_loss"]
    trace = store.series(run_id, "val_loss")
    assert set(trace) == {"step", "epoch", "value", "wall_time"}
    assert trace["step"].tolist() == [0, 1, 2, 4] and trace["step"].dtype == np.int64
    assert trace["epoch"].tolist() == [0, 0, 1, 1] and trace["value"].tolist() == [3.0, 2.0, 1.5, 1.0]
    assert trace["wall_time"].tolist() == [0.0, 0.5, 8.0, 9.0] and trace["value"].dtype == np.float64
    assert all(len(v) == 0 for v in store.series(run_id, "nope").values())
    assert store.metric_keys(store.create_run(name="empty", config={})) == []


def test_a_metric_batch_is_one_transaction(store: Store, clock: FakeClock) -> None:
    run_id = store.create_run(name="r", config={})
    store.log_metrics(run_id, rows("loss", [1.0]), progress_step=1)
    beat = store.get_run(run_id).heartbeat_at
    clock.advance(5)
    bad = rows("loss", [2.0, 3.0], start=1) + [MetricRow(None, 3, 0, 4.0, 1.0)]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a metric key must be a non-empty string"):
        store.log_metrics(run_id, bad, progress_step=3)
    assert store.series(run_id, "loss")["value"].tolist() == [1.0]
    run = store.get_run(run_id)
    assert (run.progress_step, run.heartbeat_at) == (1, beat)
    store.log_metrics(run_id, [])  # an empty batch is a heartbeat
    assert store.get_run(run_id).heartbeat_at == clock.now and store.get_run(run_id).progress_step == 1


def test_a_batch_with_columns_of_different_lengths_is_refused_whole(store: Store) -> None:
    run_id = store.create_run(name="r", config={})
    batch = MetricBatch.from_rows(rows("loss", [1.0, 2.0]))
    batch.values.pop()
    with pytest.raises(ValueError, match="one length.*'values': 1"):
        store.log_metrics(run_id, batch)
    assert store.series(run_id, "loss")["value"].tolist() == []


def test_rows_survive_a_killed_writer(db_path: Path) -> None:
    child = textwrap.dedent("""
        import os, sys
        from core.training.reporting import MetricRow
        from core.store import Store
        store = Store(sys.argv[1])
        run_id = store.create_run(name="doomed", config={})
        store.start_run(run_id, device="cpu", dtype="float32", torch_version="2", total_steps=10_000,
                        pid=os.getpid(), host="h")
        for batch in range(3):
            store.log_metrics(run_id, [MetricRow("loss", batch * 1000 + i, batch, float(i), 0.0) for i in range(1000)],
                              progress_step=(batch + 1) * 1000)
        print(run_id, flush=True)
        os._exit(1)  # no close, no dispose, no checkpoint
    """)
    done = subprocess.run([sys.executable, "-c", child, f"sqlite:///{db_path}"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    run_id = int(done.stdout)
    with Store(f"sqlite:///{db_path}") as s:
        trace = s.series(run_id, "loss")
        assert len(trace["step"]) == 3000 and trace["step"].tolist() == list(range(3000))
        run = s.get_run(run_id)
        assert (run.status, run.progress_step) == ("running", 3000)
        assert s.mark_interrupted(host="h", pid_alive=pid_alive) == [run_id]
        assert s.get_run(run_id).status == "interrupted"


# --------------------------------------------------------------------------------------------- interrupted runs


def test_mark_interrupted(store: Store, clock: FakeClock) -> None:
    def run(name: str, *, pid: int | None, host: str | None, start: bool = True) -> int:
        run_id = store.create_run(name=name, config={})
        if start:
            store.start_run(run_id, device="cpu", dtype="float32", torch_version="2", total_steps=10, pid=pid,
                            host=host)
        return run_id

    dead_local = run("dead_local", pid=11, host="here")
    alive_local_stale = run("alive_local_stale", pid=12, host="here")
    remote_stale = run("remote_stale", pid=11, host="elsewhere")
    no_pid_stale = run("no_pid_stale", pid=None, host=None)
    never_started = run("never_started", pid=None, host=None, start=False)
    finished = run("finished", pid=11, host="here")
    store.finish_run(finished, status="finished", summary={}, wall_time_s=1.0)
    clock.advance(30)
    store.heartbeat(dead_local)
    clock.advance(61)
    remote_fresh = run("remote_fresh", pid=13, host="elsewhere")
    clock.advance(1)
    asked: list[int] = []

    def fake_alive(pid: int) -> bool:
        asked.append(pid)
        return pid != 11

    marked = store.mark_interrupted(host="here", pid_alive=fake_alive, stale_after_s=60)
    assert marked == [dead_local, remote_stale, no_pid_stale, never_started]
    assert sorted(asked) == [11, 12]  # only runs of this host are judged by pid
    for run_id in marked:
        r = store.get_run(run_id)
        assert (r.status, r.error, r.finished_at) == ("interrupted", INTERRUPTED_ERROR, clock.now)
    assert store.get_run(dead_local).wall_time_s == 30.0  # started to last heartbeat, not to discovery
    assert store.get_run(never_started).wall_time_s is None
    assert store.get_run(alive_local_stale).status == "running"
    assert store.get_run(remote_fresh).status == "running"
    assert store.get_run(finished).status == "finished" and store.get_run(finished).error is None
    assert store.mark_interrupted(host="here", pid_alive=fake_alive) == []


def test_a_run_whose_pid_lives_on_in_another_process_is_interrupted(store: Store, clock: FakeClock) -> None:
    """After a reboot the dead run's pid can belong to a new process: alive by its pid, but silent for longer than
    any run stays silent (it beats at every flush), it is interrupted; a run that beats stays running."""
    quiet, beating = (store.create_run(name=n, config={}) for n in ("quiet", "beating"))
    for run_id in (quiet, beating):
        store.start_run(run_id, device="cpu", dtype="float32", torch_version="2", total_steps=10, pid=12, host="here")
    clock.advance(REUSED_AFTER_S - 5)
    store.heartbeat(beating)
    clock.advance(10)
    assert store.mark_interrupted(host="here", pid_alive=lambda pid: True) == [quiet]
    assert store.get_run(beating).status == "running"


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-5)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pid_alive(child.pid):  # exited but not reaped: a zombie
        time.sleep(0.05)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------------------------- studies


def test_studies(store: Store, clock: FakeClock) -> None:
    first = store.create_study("lr sweep", {"lr": [0.1, math.nan]})
    clock.advance(1)
    second = store.create_study("depth", {"hidden": [[8], [8, 8]]})
    study = store.get_study(first)
    assert (study.id, study.name, study.created_at) == (first, "lr sweep", T0)
    assert study.spec["lr"][0] == 0.1 and math.isnan(study.spec["lr"][1])
    assert store.get_study_by_name("depth").id == second and store.get_study_by_name("nope") is None
    assert [s.name for s in store.list_studies()] == ["depth", "lr sweep"]
    with pytest.raises(ValueError, match="a study named 'depth' already exists"):
        store.create_study("depth", {})
    with pytest.raises(StudyNotFound, match="^no study with id 99$"):
        store.get_study(99)
    with pytest.raises(StudyNotFound):
        store.create_run(name="r", config={}, study_id=99)
    run_id = store.create_run(name="r", config={}, study_id=second)
    assert store.get_run(run_id).study_id == second


# --------------------------------------------------------------------------------------------- the reporter


def test_store_reporter_drives_a_run(store: Store) -> None:
    run_id = store.create_run(name="r", config={})
    reporter = StoreReporter(store, run_id, pid=77, host="box")
    reporter.on_start(RunInfo(device="cpu", dtype="float64", torch_version="2.13.0", total_steps=50))
    reporter.on_metrics(rows("train_loss", [0.9, 0.8]), step=2)
    assert reporter.should_stop() is False
    store.request_cancel(run_id)
    assert reporter.should_stop() is True
    reporter.on_metrics(rows("train_loss", [math.nan], start=2), step=3)
    reporter.on_finish(RunResult(status="cancelled", summary={"best_val_loss": math.inf}, error=None,
                                 wall_time_s=1.25))
    run = store.get_run(run_id)
    assert (run.status, run.device, run.dtype, run.total_steps, run.pid, run.host) == (
        "cancelled", "cpu", "float64", 50, 77, "box")
    assert (run.progress_step, run.wall_time_s, run.summary) == (3, 1.25, {"best_val_loss": math.inf})
    values = store.series(run_id, "train_loss")["value"]
    assert values[:2].tolist() == [0.9, 0.8] and math.isnan(values[2])


def test_store_reporter_stops_when_its_run_is_deleted(store: Store) -> None:
    run_id = store.create_run(name="r", config={})
    reporter = StoreReporter(store, run_id)
    reporter.on_start(RunInfo(device="cpu", dtype="float32", torch_version="2", total_steps=5))
    store.delete_run(run_id)
    reporter.on_metrics(rows("loss", [1.0]), step=1)  # no exception into the trainer
    assert reporter.should_stop() is True
    reporter.on_finish(RunResult(status="cancelled", summary={}, error=None, wall_time_s=0.1))
    assert store.list_runs() == []


def test_metric_keys_for_several_runs_in_one_query(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'keys.db'}")
    a = store.create_run(name="a", config={})
    b = store.create_run(name="b", config={})
    store.log_metrics(a, [MetricRow("train_loss", 1, 0, 0.5, 0.0), MetricRow("clamp_frac", 1, 0, 0.0, 0.0)])
    store.log_metrics(b, [MetricRow("val_loss", 1, 0, 0.7, 0.0), MetricRow("train_loss", 1, 0, 0.6, 0.0)])
    assert store.metric_keys_for([a, b, 999]) == ["clamp_frac", "train_loss", "val_loss"]
    assert store.metric_keys_for([b]) == store.metric_keys(b)
    assert store.metric_keys_for([]) == []


def test_a_store_that_refuses_writes_interrupts_the_run_instead_of_failing_it(tmp_path: Path) -> None:
    """A write lock held past the busy timeout (another process, a backup), a full disk: the run is stopped as
    "interrupted", which a study reruns, with the reason in one line, not "failed" (a result a study keeps)
    with a page of SQLAlchemy traceback."""
    from core.experiment.config import ExperimentConfig
    from core.training.trainer import train

    path = tmp_path / "locked.db"
    store = Store(f"sqlite:///{path}")
    event.listen(store.engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout=100"))
    store.engine.dispose()  # connections from now on wait 0.1 s for a lock, not 30 s
    run_id = store.create_run(name="locked out", config={})
    holder = sqlite3.connect(path, isolation_level=None)

    class LockedOut(StoreReporter):
        def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the database from the first flush on
            super().on_metrics(batch, step=step)

        def on_finish(self, result: RunResult) -> None:
            holder.execute("ROLLBACK")  # it lets go: the run's end can be stored
            super().on_finish(result)

    result = train(ExperimentConfig(epochs=1, n_samples=200, hidden=(4,)), LockedOut(store, run_id))
    assert result.status == "interrupted"
    assert result.error == "the store could not take the run's values: database is locked"
    stored = store.get_run(run_id)
    assert (stored.status, stored.error) == ("interrupted", result.error)


def test_names_and_tags_past_255_characters_are_refused_on_every_backend(tmp_path):
    # VARCHAR(255): PostgreSQL refuses a longer value, SQLite would keep it; a store must move between them
    store = Store(f"sqlite:///{tmp_path / 'long.db'}")
    with pytest.raises(ValueError, match=r"run name must be at most 255 characters \(got 256\)"):
        store.create_run(name="x" * 256, config={})
    run_id = store.create_run(name="x" * 255, config={})
    with pytest.raises(ValueError, match="tag must be at most 255 characters"):
        store.add_tag(run_id, "t" * 300)
    with pytest.raises(ValueError, match="run name must be at most 255"):
        store.rename_run(run_id, "y" * 256)
    assert store.get_run(run_id).name == "x" * 255 and not store.get_run(run_id).tags
    # a control character breaks the lines of tables, LaTeX and CSV: refused in names, tags and study names alike
    for bad in ("a\nb", "tab\there", "nul\x00"):
        with pytest.raises(ValueError, match="run name must not contain control characters"):
            store.create_run(name=bad, config={})
        with pytest.raises(ValueError, match="tag must not contain control characters"):
            store.add_tag(run_id, bad)
        with pytest.raises(ValueError, match="study name must not contain control characters"):
            store.create_study(bad, {})
    store.rename_run(run_id, "naïve – ünïcode ✓")  # letters and symbols of any script are text
    assert store.get_run(run_id).name == "naïve – ünïcode ✓"
