"""The store against its previous release and against the hardware floor, in the same run and the same kind of file.

- ingest: the chunk store (`Store.log_metrics` through `StoreReporter`, one chunk per metric per flush) against
  the previous release's row store (one SQL row per value into the `metrics` table of schema 0001, with its index,
  by `executemany`, as that release's `Store.log_metrics` did at 0.95x raw sqlite3); and what a run's end adds:
  compacting its chunks, against writing them;
- read: `Store.traces` at full resolution into numpy arrays, against the floor: the same values as one float64
  BLOB per (run, metric) in the same SQLite file, read with sqlite3 and `numpy.frombuffer`;
- size: bytes per stored value of real runs with full diagnostics (the trainer writing through `StoreReporter`);
- migration: a database written at schema 0001 converted by migration 0002 in a child process, its peak resident
  memory (`--migration`, minutes: it writes a database of the size asked for first).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import time
from itertools import repeat
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: python benchmarks/store.py MB

from core.store import Store, StoreReporter  # noqa: E402
from core.training.reporting import MetricBatch  # noqa: E402

# The per-step metrics a run with full diagnostics logs (a 1-hidden-layer MLP): what one trainer flush holds.
FULL_DIAGNOSTICS = ("train_loss", "train_loss_logits", "clamp_frac", "clamp_wrong_frac", "grad_vanish_frac",
                    "logit_mean", "logit_std", "logit_abs_max", "pred_pos_rate", "grad_norm", "grad_norm/fc0",
                    "grad_norm/out", "update_norm", "dead_relu_frac", "lr")
ROW_SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id)
    ON DELETE CASCADE, key VARCHAR(255) NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL, value FLOAT,
    wall_time FLOAT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_metrics_run_key_step ON metrics (run_id, key, step);
"""


def fake_flush(n_steps: int, keys: tuple[str, ...], start: int = 0, run: int = 0) -> MetricBatch:
    """One flush of `n_steps` steps x `keys`, in the columns the trainer reports: values computed in float32 on
    the device (so float32-exact, as the trainer's are), one wall time per step shared by its metrics; `run`
    makes another run's values and times."""
    rng = np.random.default_rng((run, start))
    steps = list(range(start + 1, start + n_steps + 1))
    wall = (0.00031 * np.arange(start, start + n_steps) + rng.uniform(0, 1e-5, n_steps)).tolist()
    batch = MetricBatch()
    for j, k in enumerate(keys):
        decay = np.exp(-np.arange(start, start + n_steps) / 4000.0) * (j + 1)
        values = (decay + 0.02 * rng.standard_normal(n_steps)).astype(np.float32).astype(np.float64).tolist()
        batch.add_series(k, steps, [s // 100 for s in steps], values, wall)
    return batch


def _row_store(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(ROW_SCHEMA)
    return con


def bench_store(repeats: int, quick: bool, workdir: Path) -> list:
    from benchmarks.bench import Row, interleaved, paired

    n_runs, n_steps = (5, 2000) if quick else (20, 5000)
    keys = FULL_DIAGNOSTICS
    flush = 500  # the trainer flushes every second or every 500 steps, whichever comes first
    flushes = [fake_flush(flush, keys, start) for start in range(0, n_steps, flush)]
    n_values = n_runs * n_steps * len(keys)
    empty = workdir / "empty.db"
    Store(f"sqlite:///{empty}").close()  # today's schema, made by the store's migrations

    def ours_ingest() -> None:  # both sides start from a copy of the same empty, migrated database
        path = workdir / f"ours-{time.perf_counter_ns()}.db"
        path.write_bytes(empty.read_bytes())
        with Store(f"sqlite:///{path}") as store:
            for r in range(n_runs):
                run_id = store.create_run(name=f"r{r}", config={})
                reporter = StoreReporter(store, run_id)
                for i, batch in enumerate(flushes):
                    reporter.on_metrics(batch, step=(i + 1) * flush)
        path.unlink()

    def ours_compaction() -> None:  # what finishing those runs adds: each run's chunks merged, one per metric
        path = workdir / f"compact-{time.perf_counter_ns()}.db"
        path.write_bytes(written.read_bytes())
        with Store(f"sqlite:///{path}") as store:
            for run_id in range(1, n_runs + 1):
                store.compact(run_id)
        path.unlink()

    written = workdir / "written.db"  # the runs as ingest leaves them, for the compaction's figure
    written.write_bytes(empty.read_bytes())
    with Store(f"sqlite:///{written}") as store:
        for r in range(n_runs):
            run_id = store.create_run(name=f"r{r}", config={})
            for batch in flushes:
                store.log_metrics(run_id, batch)

    def rows_ingest() -> None:  # the previous release's write path: a row per value, one transaction per flush
        path = workdir / f"rows-{time.perf_counter_ns()}.db"
        path.write_bytes(empty.read_bytes())
        con = _row_store(path)
        for r in range(n_runs):
            with con:
                run_id = con.execute("INSERT INTO runs (name, status, config_json, summary_json, created_at, "
                                     "cancel_requested, progress_step, notes) VALUES (?, 'running', '{}', '{}', "
                                     "'2026-01-01', 0, 0, '')", (f"r{r}",)).lastrowid
            for i, batch in enumerate(flushes):
                with con:
                    con.execute("UPDATE runs SET heartbeat_at = '2026-01-01', progress_step = ? WHERE id = ?",
                                ((i + 1) * flush, run_id))
                    con.executemany("INSERT INTO metrics (run_id, key, step, epoch, value, wall_time) "
                                    "VALUES (?, ?, ?, ?, ?, ?)",
                                    zip(repeat(run_id), batch.keys, batch.steps, batch.epochs, batch.values,
                                        batch.wall_times))
        con.close()
        path.unlink()

    t = interleaved({"ours": ours_ingest, "rows": rows_ingest}, repeats)
    rate = paired(t["rows"], t["ours"])  # a ratio of rates: the row store's time / ours
    rows = [Row("store ingest", f"{n_runs} runs x {n_steps} steps x {len(keys)} metrics ({n_values:,} values): "
                "chunks vs the previous release's row store, values/s", n_values / statistics.median(t["ours"]),
                n_values / statistics.median(t["rows"]), "values/s", ">= 5x the row store", rate[0] >= 5, rate)]
    t = interleaved({"compact": ours_compaction, "ours": ours_ingest}, repeats)
    share = paired(t["compact"], t["ours"])  # a file copy on both sides: the ratio errs high
    rows.append(Row("store ingest", f"compacting those {n_runs} runs when they finish (each metric's chunks merged "
                    "into one), vs writing them", statistics.median(t["compact"]), statistics.median(t["ours"]), "s",
                    "-", None, share))

    # read, at full resolution, against frombuffer of the same values in the same file
    read_db = workdir / "read.db"
    with Store(f"sqlite:///{read_db}") as store:
        ids = []
        for r in range(max(20, n_runs)):
            run_id = store.create_run(name=f"r{r}", config={})
            for start in range(0, n_steps, flush):  # each run its own values and times, as real runs have
                store.log_metrics(run_id, fake_flush(flush, keys, start, run=r))
            store.finish_run(run_id, status="finished", summary={})  # as a trained run ends: chunks compacted
            ids.append(run_id)
        write_floor(read_db, store, ids, list(keys))
    store = Store(f"sqlite:///{read_db}")
    for label, run_ids, wanted in (("5 runs x 2 metrics", ids[:5], list(keys[:2])),
                                   ("20 runs x 1 metric", ids[:20], [keys[0]])):
        for what, fields in (("steps and values", ()), ("every field", ("epoch", "wall_time"))):
            t = interleaved({"ours": lambda: store.traces(run_ids, wanted, fields=fields),
                             "floor": lambda: read_floor(read_db, run_ids, wanted)}, repeats)
            ratio = paired(t["ours"], t["floor"])
            rows.append(Row("store read", f"{label} ({len(run_ids) * len(wanted) * n_steps:,} points, {what}) of "
                            "finished runs into arrays, vs frombuffer of one float64 BLOB per series",
                            statistics.median(t["ours"]), statistics.median(t["floor"]), "s", "<= 3x the floor",
                            ratio[0] <= 3.0, ratio))
    store.close()
    return rows


# ---------------------------------------------------------------------- the floor
def write_floor(path: Path, store: Store, run_ids: list[int], keys: list[str]) -> None:
    """The floor's table in the same file: each series' values as one float64 BLOB."""
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE IF NOT EXISTS floor (run_id INTEGER, key TEXT, data BLOB, PRIMARY KEY (run_id, key))")
        for trace in store.traces(run_ids, keys):
            con.execute("INSERT OR REPLACE INTO floor VALUES (?, ?, ?)",
                        (trace.run_id, trace.key, trace.points.value.tobytes()))
    con.close()


def read_floor(path: Path, run_ids: list[int], keys: list[str]) -> list[np.ndarray]:
    con = sqlite3.connect(path)
    marks = ", ".join("?" * len(run_ids))
    keys_marks = ", ".join("?" * len(keys))
    out = [np.frombuffer(data, dtype=np.float64) for (data,) in con.execute(
        f"SELECT data FROM floor WHERE run_id IN ({marks}) AND key IN ({keys_marks})", (*run_ids, *keys))]
    con.close()
    return out


# ---------------------------------------------------------------------- bytes per value
def bench_size(workdir: Path, *, quick: bool) -> list:
    """Bytes per stored value of real runs with full diagnostics: `article-fixed` trained through the store."""
    from benchmarks.bench import Row
    from core.experiment.config import preset
    from core.training.trainer import train

    epochs = 50 if quick else 1250  # the measurement: two runs of article-fixed --epochs 1250
    path = workdir / "size.db"
    with Store(f"sqlite:///{path}") as store:
        for seed in (0, 1):
            cfg = preset("article-fixed").replace(epochs=epochs, seed=seed)
            run_id = store.create_run(name=f"article-fixed s{seed}", config=cfg.to_dict())
            train(cfg, StoreReporter(store, run_id))
        n_values = int(sum(len(t.points) for t in store.traces([r.id for r in store.list_runs()])))
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("VACUUM")
    pages, size = con.execute("PRAGMA page_count").fetchone()[0], con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    per_value = pages * size / n_values
    return [Row("store size", f"2 runs of article-fixed, {epochs} epochs, full diagnostics ({n_values:,} values): "
                "bytes per value vs the previous release's 72.5", per_value, 72.5, "B", "<= 12 B", per_value <= 12)]


# ---------------------------------------------------------------------- migration memory
MIGRATE = """
import resource, sys, time
sys.path.insert(0, sys.argv[2])
from core.store import Store
t = time.perf_counter()
Store("sqlite:///" + sys.argv[1]).close()
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def bench_migration(workdir: Path, *, megabytes: int) -> list:
    """Write a database at schema 0001 of about `megabytes` MB (rows as the previous release stored them), then
    convert it in a child process; report the child's peak resident memory and the time."""
    from benchmarks.bench import Row
    from core import PROJECT_ROOT
    from core.store.database import alembic_config, make_engine
    from alembic import command

    path = workdir / "v1.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    engine.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    keys = ("train_loss", "train_loss_logits", "clamp_frac", "grad_norm", "val_loss")
    run = 0
    while path.stat().st_size < megabytes * 1e6:
        run += 1
        with con:
            run_id = con.execute("INSERT INTO runs (name, status, config_json, summary_json, created_at, "
                                 "cancel_requested, progress_step, notes) VALUES (?, 'finished', '{}', '{}', "
                                 "'2026-01-01', 0, 0, '')", (f"r{run}",)).lastrowid
            for start in range(0, 100_000, 10_000):
                batch = fake_flush(10_000, keys, start)
                con.executemany("INSERT INTO metrics (run_id, key, step, epoch, value, wall_time) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                zip(repeat(run_id), batch.keys, batch.steps, batch.epochs, batch.values,
                                    batch.wall_times))
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n_rows = con.execute("SELECT count(*) FROM metrics").fetchone()[0]
    con.close()
    size = path.stat().st_size
    out = subprocess.run([sys.executable, "-c", MIGRATE, str(path), str(PROJECT_ROOT)], capture_output=True,
                         text=True, check=True)
    seconds, peak = (float(v) for v in out.stdout.split())
    after = path.stat().st_size
    return [Row("store migration", f"0001 -> 0002 of a {size / 1e6:,.0f} MB database ({n_rows:,} rows, {run} runs): "
                f"peak resident memory of the converting process ({seconds:.0f} s; file {after / 1e6:,.0f} MB after, "
                "vacuumed)", peak / 1e6, 500, "MB", "< 500 MB", peak < 500e6)]


if __name__ == "__main__":  # python benchmarks/store.py MB: only the migration figure
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for row in bench_migration(Path(tmp), megabytes=int(sys.argv[1]) if len(sys.argv) > 1 else 200):
            print(row)
    os._exit(0)
