"""Studies on a real Dask cluster (a `dask scheduler` and two `dask worker` processes started in the project
folder, as a user would) against a real PostgreSQL: every cell once, a worker killed mid-cell, two schedulers on
one study at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from core import PROJECT_ROOT
from core.experiment.config import ExperimentConfig
from core.jobs.scheduler import resume_study
from core.jobs.spec import StudySpec, run_key
from core.jobs.studies import load_spec, open_study
from core.store import Run, Store
from core.store.leases import Leases

pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install -r requirements-scale.txt)")

GRID = {"batchnorm": [False, True], "loss": ["bce", "bce_with_logits"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """tcp://... of a scheduler with two single-threaded workers, each a plain `dask worker` in the project."""
    folder = tmp_path_factory.mktemp("dask")
    info = folder / "scheduler.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the workers find `core` on their own
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--scheduler-file", str(info), "--port", "0", "--no-dashboard"],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.monotonic() + 60
    while not info.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(2):
        procs.append(subprocess.Popen(["dask", "worker", "--scheduler-file", str(info), "--nthreads", "1",
                                       "--no-dashboard"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    address = json.loads(info.read_text())["address"]
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=90)
    yield address
    for proc in procs[::-1]:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def study(store: Store, name: str, epochs: int = 1, n_samples: int = 200) -> int:
    base = ExperimentConfig(n_samples=n_samples, epochs=epochs, diagnostics="loss").to_dict()
    return open_study(store, StudySpec(name=name, base=base, vary=GRID, seeds=2))


def assert_each_cell_once(store: Store, study_id: int) -> None:
    runs = store.list_runs(study_id=study_id)
    spec = load_spec(store, study_id)
    keys = [run_key(spec, r.config) for r in runs]
    assert len(runs) == 8 and {r.status for r in runs} == {"finished"}
    assert None not in keys and len(set(keys)) == 8
    assert all(r.host for r in runs)


def killer(pg_url: str, study_id: int, choose: Callable[[list[Run]], list[Run]]) -> tuple[threading.Thread, list[int]]:
    """A started thread that watches the study's running runs for up to 120 s; once `choose` picks some of those
    before half their steps, it kills their processes (the dask worker processes: their nannies start others)
    and notes the runs' ids in the list it returns."""
    killed: list[int] = []

    def watch() -> None:
        watcher = Store(pg_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            early = [r for r in watcher.list_runs(study_id=study_id, status="running")
                     if r.pid and r.total_steps and 0 < r.progress_step < r.total_steps // 2]
            chosen = choose(early)
            for pid in {r.pid for r in chosen}:
                os.kill(pid, signal.SIGKILL)
            killed.extend(r.id for r in chosen)
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, killed


def test_an_8_cell_study_on_two_dask_workers_against_postgresql(cluster, pg_url):
    store = Store(pg_url)
    study_id = study(store, "on dask")
    seen = []
    outcome = resume_study(store, study_id, executor="dask", scheduler=cluster, on_finished=seen.append)
    assert outcome.remaining == 0 and not outcome.cancelled and len(outcome.run_ids) == 8
    assert sorted(e.done for e in seen) == list(range(1, 9))
    assert_each_cell_once(store, study_id)
    assert [c["attempts"] for c in Leases(store).cells(study_id)] == [1] * 8
    assert len({r.pid for r in store.list_runs(study_id=study_id)}) == 2  # both workers trained
    again = resume_study(store, study_id, executor="dask", scheduler=cluster)  # nothing left: nothing added
    assert again.kept == 8 and again.run_ids == [] and len(store.list_runs(study_id=study_id)) == 8


def test_a_study_on_dask_trains_the_cells_that_group_as_populations(cluster, pg_url):
    """With populations (the `study` command's default), each task claims an even share of the cells per worker
    thread among those that can share a model (here all 8: BatchNorm and the loss are batched) and trains them
    side by side: two populations of four, one on each worker."""
    store = Store(pg_url)
    study_id = study(store, "populations on dask")
    seen = []
    outcome = resume_study(store, study_id, executor="dask", scheduler=cluster, on_finished=seen.append,
                           population=True)
    assert outcome.remaining == 0 and len(outcome.run_ids) == 8 and sorted(e.done for e in seen) == list(range(1, 9))
    assert_each_cell_once(store, study_id)
    cells = Leases(store).cells(study_id)
    assert [c["attempts"] for c in cells] == [1] * 8
    pid_of = {r.id: r.pid for r in store.list_runs(study_id=study_id)}
    by_holder: dict[str, set[int]] = {}
    for cell in cells:
        by_holder.setdefault(cell["holder"], set()).add(cell["run_id"])
    assert sorted(len(runs) for runs in by_holder.values()) == [4, 4]
    # each population trained in one worker process, each on its own worker (the executor spreads them)
    assert all(len({pid_of[r] for r in runs}) == 1 for runs in by_holder.values())
    assert len(set(pid_of.values())) == 2


def test_a_worker_killed_mid_cell_leaves_one_finished_run_per_cell(cluster, pg_url):
    store = Store(pg_url)
    study_id = study(store, "killed on dask", epochs=150, n_samples=1000)
    watching, killed = killer(pg_url, study_id, lambda early: early[:1])  # the first run before half its steps
    outcome = resume_study(store, study_id, executor="dask", scheduler=cluster, lease_timeout_s=5)
    watching.join()
    assert killed and outcome.remaining == 0
    assert_each_cell_once(store, study_id)
    assert killed[0] not in {r.id for r in store.list_runs(study_id=study_id)}  # replaced by the rerun
    assert sorted(c["attempts"] for c in Leases(store).cells(study_id)) == [1] * 7 + [2]


def test_two_schedulers_on_one_study_train_no_cell_twice(cluster, pg_url):
    store = Store(pg_url)
    name = "two schedulers"
    study(store, name)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "LOSSBOARD_EXECUTOR": "dask",
           "LOSSBOARD_DASK_SCHEDULER": cluster}
    procs = [subprocess.Popen([sys.executable, "-m", "core", "study", "--study", name, "--db", pg_url],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    study_id = store.get_study_by_name(name).id
    assert_each_cell_once(store, study_id)
    assert [c["attempts"] for c in Leases(store).cells(study_id)] == [1] * 8


def test_without_a_scheduler_or_with_a_bad_executor_the_command_says_what_is_missing(tmp_path):
    from io import StringIO

    from core.cli.main import main

    err = StringIO()
    code = main(["study", "--preset", "article-fixed", "--vary", "lr=0.1,0.2", "--executor", "dask",
                 "--db", str(tmp_path / "x.db")], out=StringIO(), err=err, env={})
    assert code == 2 and err.getvalue().count("\n") == 1 and "scheduler" in err.getvalue()
    assert not Path(tmp_path / "x.db").exists() or Store(str(tmp_path / "x.db")).list_studies() == []


def test_a_scheduler_that_is_not_there_is_said_at_once_and_stores_no_study(pg_url):
    import socket
    from io import StringIO

    from core.cli.main import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = len(Store(pg_url).list_studies())
    err, began = StringIO(), time.monotonic()
    code = main(["study", "--preset", "article-fixed", "--vary", "lr=0.1,0.2", "--executor", "dask", "--scheduler",
                 f"tcp://127.0.0.1:{port}", "--db", pg_url], out=StringIO(), err=err, env={})
    assert code == 2 and err.getvalue().startswith("error: scheduler: cannot reach the Dask scheduler at 'tcp://")
    assert time.monotonic() - began < 10  # not Dask's 30-s retry of a refused connection
    err = StringIO()
    assert main(["study", "--preset", "article-fixed", "--vary", "lr=0.1,0.2", "--executor", "dask", "--scheduler",
                 "tcp://nowhere", "--db", pg_url], out=StringIO(), err=err, env={}) == 2
    assert "must look like tcp://HOST:PORT" in err.getvalue()
    assert len(Store(pg_url).list_studies()) == before  # nothing stored for a cluster that is not there


def test_a_scheduler_address_is_checked_for_what_answers_there(cluster, pg_url):
    from io import StringIO

    from sqlalchemy.engine import make_url

    from core.cli.main import main
    from core.experiment.config import ConfigError
    from core.jobs.executors import check_scheduler

    check_scheduler(cluster)
    check_scheduler(cluster.removeprefix("tcp://"))  # HOST:PORT is tcp://, as Dask reads it
    with pytest.raises(ConfigError, match="'bogus://x' is not a Dask address"):
        check_scheduler("bogus://x")
    url = make_url(pg_url)  # the PostgreSQL server's port: something listens, but it is no Dask scheduler
    with pytest.raises(ConfigError, match="no Dask scheduler answered at 'tcp://"):
        check_scheduler(f"tcp://{url.host}:{url.port}", timeout_s=2)
    before = len(Store(pg_url).list_studies())
    for address in ("bogus://x", f"{url.host}:{url.port}"):  # each had stored an empty study, then hung or failed
        err = StringIO()
        assert main(["study", "--preset", "article-fixed", "--vary", "lr=0.1,0.2", "--executor", "dask",
                     "--scheduler", address, "--db", pg_url], out=StringIO(), err=err, env={}) == 2
        assert err.getvalue().startswith("error: scheduler: ") and err.getvalue().count("\n") == 1
    assert len(Store(pg_url).list_studies()) == before


def test_every_worker_killed_at_once_mid_population_and_the_study_still_finishes(cluster, pg_url):
    """Both worker processes die together (their nannies start new ones, at new addresses): the population tasks
    that preferred the dead workers are sent again to the new ones, and every cell ends once, none twice."""
    store = Store(pg_url)
    study_id = study(store, "all killed on dask", epochs=150, n_samples=1000)
    # both workers training their populations: every such run's process, at once
    watching, killed = killer(pg_url, study_id, lambda early: early if len({r.pid for r in early}) == 2 else [])
    result: dict = {}

    def run() -> None:
        result["outcome"] = resume_study(store, study_id, executor="dask", scheduler=cluster, lease_timeout_s=5,
                                         population=True)

    runner = threading.Thread(target=run, daemon=True)  # a hang fails the test instead of stalling the suite
    runner.start()
    runner.join(timeout=240)
    watching.join()
    assert not runner.is_alive(), "the study waited for tasks placed on workers that were gone"
    assert killed and result["outcome"].remaining == 0
    assert_each_cell_once(store, study_id)
    assert not set(killed) & {r.id for r in store.list_runs(study_id=study_id)}  # replaced by the reruns
