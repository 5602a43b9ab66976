"""The same ingest and read through MLflow's SQLite tracking backend, for the README's comparison. MLflow is never
a requirement: `bench.py` adds these rows only where `import mlflow` works."""

from __future__ import annotations

import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np

from core.store import Store, StoreReporter
from core.training.reporting import MetricBatch

BATCH = 1000  # MLflow's log_batch accepts at most 1,000 metrics per call


def available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def bench_mlflow(repeats: int, workdir: Path, *, n_runs: int, chunks: list[MetricBatch], keys: tuple[str, ...]):
    """Ingest: `n_runs` runs of `chunks` through our store and through `MlflowClient.log_batch`. Read: every point of
    5 runs x 2 metrics through `Store.metrics_frame` and `MlflowClient.get_metric_history`."""
    from mlflow import __version__ as version  # noqa: PLC0415
    from mlflow.entities import Metric  # noqa: PLC0415
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from benchmarks.bench import Row, interleaved, paired  # noqa: PLC0415

    n_steps = sum(len(c) for c in chunks) // len(keys)
    # Both sides start each repeat from a copy of an empty, migrated database (MLflow's migrations take seconds).
    template, our_template = workdir / "mlflow-template.db", workdir / "ours-template.db"
    MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
    Store(f"sqlite:///{our_template}").close()
    t0 = int(time.time() * 1000)
    batches = [[Metric(r.key, r.value, t0 + int(r.wall_time * 1000), r.step)
                for r in list(rows)[i:i + BATCH]] for rows in chunks for i in range(0, len(rows), BATCH)]

    def ours() -> None:
        path = workdir / f"ours-{time.perf_counter_ns()}.db"
        path.write_bytes(our_template.read_bytes())
        store = Store(f"sqlite:///{path}")
        for r in range(n_runs):
            rep = StoreReporter(store, store.create_run(name=f"r{r}", config={}))
            for i, chunk in enumerate(chunks):
                rep.on_metrics(chunk, step=i)
        store.close()

    def theirs() -> None:
        path = workdir / f"mlflow-{time.perf_counter_ns()}.db"
        path.write_bytes(template.read_bytes())
        client = MlflowClient(tracking_uri=f"sqlite:///{path}")
        exp = client.create_experiment("bench")
        for r in range(n_runs):
            run_id = client.create_run(exp, run_name=f"r{r}").info.run_id
            for batch in batches:
                client.log_batch(run_id, metrics=batch)

    ingest = interleaved({"ours": ours, "mlflow": theirs}, repeats)
    n_values = n_runs * n_steps * len(keys)
    rate = paired(ingest["mlflow"], ingest["ours"])

    # read: one filled database of each kind
    store = Store(f"sqlite:///{workdir / 'ours-read.db'}")
    ours_ids = []
    path = workdir / "mlflow-read.db"
    path.write_bytes(template.read_bytes())
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    exp = client.create_experiment("bench")
    their_ids = []
    for r in range(5):
        run_id = store.create_run(name=f"r{r}", config={})
        for chunk in chunks:
            store.log_metrics(run_id, chunk)
        ours_ids.append(run_id)
        mid = client.create_run(exp, run_name=f"r{r}").info.run_id
        for batch in batches:
            client.log_batch(mid, metrics=batch)
        their_ids.append(mid)
    wanted = list(keys[:2])

    def ours_read() -> None:
        frame = store.metrics_frame(ours_ids, wanted)
        for _, g in frame.groupby(["run_id", "key"], sort=False):
            g["step"].to_numpy(), g["value"].to_numpy()

    def their_read() -> None:
        for rid in their_ids:
            for key in wanted:
                history = client.get_metric_history(rid, key)
                np.array([m.step for m in history]), np.array([m.value for m in history])

    read = interleaved({"ours": ours_read, "mlflow": their_read}, repeats)
    store.close()
    return [
        Row(f"vs MLflow {version}", f"ingest, {n_runs} runs x {n_steps} steps x {len(keys)} metrics, rate in values/s "
            "(ours / MLflow log_batch)", n_values / statistics.median(ingest["ours"]),
            n_values / statistics.median(ingest["mlflow"]), "values/s", "-", None, rate),
        Row(f"vs MLflow {version}", f"read, 5 runs x 2 metrics ({5 * 2 * n_steps:,} points) into arrays (ours / "
            "get_metric_history)", statistics.median(read["ours"]), statistics.median(read["mlflow"]), "s", "-", None,
            paired(read["ours"], read["mlflow"])),
    ]
