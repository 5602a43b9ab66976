"""Scale-out benchmarks: aggregate ingest from 4 concurrent writers into PostgreSQL and into SQLite (values/s,
against one writer), and a study's throughput on 1 and 2 Dask workers (runs/s and their ratio).

    python benchmarks/scale.py            # about 2-3 minutes; writes its section of benchmarks/RESULTS.md
    python benchmarks/scale.py --quick    # a smoke run; prints only

PostgreSQL is a throwaway server started like the tests' (tests/pg.py: Debian's postgresql, fsync off), so the
figures are of the database's work, not of a disk's flush. Each writer is its own process with its own Store,
writing runs of `STEPS` steps x `METRICS` metrics in the trainer's flushes of 500 steps.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

METRICS = 15
FLUSH = 500


def _writer(url: str, runs: int, steps: int, start: multiprocessing.Event, out: multiprocessing.Queue) -> None:
    import numpy as np

    from core.store import Store
    from core.training.reporting import MetricBatch

    store = Store(url)
    keys = [f"metric_{i}" for i in range(METRICS)]
    rng = np.random.default_rng(os.getpid())
    batches = []
    for at in range(0, steps, FLUSH):
        n = min(FLUSH, steps - at)
        step = np.arange(at + 1, at + n + 1)
        batches.append((MetricBatch(keys=[k for k in keys for _ in range(n)], steps=list(np.tile(step, METRICS)),
                                    epochs=[0] * (n * METRICS), values=list(rng.standard_normal(n * METRICS)),
                                    wall_times=list(np.tile(step * 0.001, METRICS))), at + n))
    start.wait()
    t0 = time.perf_counter()
    for r in range(runs):
        run_id = store.create_run(name=f"bench {os.getpid()} {r}", config={})
        for batch, step in batches:
            store.log_metrics(run_id, batch, progress_step=step)
    out.put((runs * steps * METRICS, t0, time.perf_counter()))


def ingest(url: str, writers: int, runs: int, steps: int) -> float:
    """Values per second, all writers together, from the first one's start to the last one's end."""
    from core.store import Store

    Store(url).close()  # migrations before the clock starts
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, runs, steps, start, out)) for _ in range(writers)]
    for p in procs:
        p.start()
    time.sleep(3)  # every writer has imported and opened its store
    start.set()
    got = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return sum(g[0] for g in got) / (max(g[2] for g in got) - min(g[1] for g in got))


def study_throughput(url: str, workers: int, cells_epochs: int) -> float:
    """Runs per second of an 8-cell study on a fresh Dask cluster of `workers` single-threaded workers."""
    from core.experiment.config import ExperimentConfig
    from core.jobs.scheduler import resume_study
    from core.jobs.spec import StudySpec
    from core.jobs.studies import open_study
    from core.store import Store

    folder = Path(tempfile.mkdtemp())
    info = folder / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file",
                               str(info), "--port", "0", "--no-dashboard"], cwd=ROOT, stderr=subprocess.DEVNULL)]
    while not info.exists():
        time.sleep(0.2)
    procs += [subprocess.Popen(["dask", "worker", "--scheduler-file", str(info), "--nthreads", "1", "--no-dashboard"],
                               cwd=ROOT, stderr=subprocess.DEVNULL) for _ in range(workers)]
    address = json.loads(info.read_text())["address"]
    from distributed import Client

    with Client(address) as client:
        client.wait_for_workers(workers, timeout=120)
    store = Store(url)
    base = ExperimentConfig(n_samples=1000, epochs=cells_epochs, diagnostics="loss").to_dict()
    warm = open_study(store, StudySpec(name=f"warm {workers}", base=base | {"epochs": 1},
                                       vary={"lr": [0.01 * (i + 1) for i in range(workers)]}, seeds=1))
    resume_study(store, warm, executor="dask", scheduler=address)  # each worker imports torch before the clock
    study_id = open_study(store, StudySpec(name=f"bench {workers}", base=base,
                                           vary={"batchnorm": [False, True], "loss": ["bce", "bce_with_logits"]},
                                           seeds=2))
    t0 = time.perf_counter()
    outcome = resume_study(store, study_id, executor="dask", scheduler=address)
    seconds = time.perf_counter() - t0
    assert outcome.remaining == 0
    for p in procs[::-1]:
        p.terminate()
        p.wait()
    return 8 / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from pg import PgServer

    runs, steps, epochs = (1, 2000, 5) if args.quick else (4, 20000, 60)
    server = PgServer()
    rows = []
    try:
        for name, make in (("PostgreSQL", lambda: server.database("bench")),
                           ("SQLite", lambda: f"sqlite:///{tempfile.mkdtemp()}/bench.db")):
            one = ingest(make(), 1, runs, steps)
            four = ingest(make(), 4, runs, steps)
            rows.append((name, one, four))
            print(f"{name}: 1 writer {one:,.0f} values/s, 4 writers {four:,.0f} values/s ({four / one:.2f}x)")
        single = study_throughput(server.database("study1"), 1, epochs)
        double = study_throughput(server.database("study2"), 2, epochs)
        print(f"study on Dask: 1 worker {single:.3f} runs/s, 2 workers {double:.3f} runs/s ({double / single:.2f}x)")
    finally:
        server.close()
    if args.quick:
        return
    section = ["## Scale-out (`python benchmarks/scale.py`)", "",
               f"Ingest: each writer a process of its own, {runs} runs x {steps:,} steps x {METRICS} metrics in "
               f"flushes of {FLUSH} steps; PostgreSQL a local server (fsync off), SQLite a file (WAL).", "",
               "| store | 1 writer, values/s | 4 writers together, values/s | ratio |", "|---|---|---|---|"]
    section += [f"| {n} | {one:,.0f} | {four:,.0f} | {four / one:.2f}x |" for n, one, four in rows]
    section += ["", f"Study throughput: 8 cells ({epochs} epochs of 1,000 samples each) against PostgreSQL on a fresh "
                "Dask cluster of single-threaded `dask worker`s (torch imported before the clock starts):", "",
                "| workers | runs/s |", "|---|---|", f"| 1 | {single:.3f} |",
                f"| 2 | {double:.3f} ({double / single:.2f}x) |",
                "", f"Machine: {os.cpu_count()} CPU cores, shared with other work while it ran.", ""]
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    head = "## Scale-out (`python benchmarks/scale.py`)"
    if head in text:  # replace only this section
        before, rest = text.split(head, 1)
        after = rest.split("\n## ", 1)
        text = before + "\n".join(section) + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + "\n".join(section)
    path.write_text(text)


if __name__ == "__main__":
    main()
