"""`python -m core worker` on a shared PostgreSQL: two workers on one study train each cell once; a database
server that goes away mid-run leaves the run marked with what happened, and every value stored before it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from core import PROJECT_ROOT
from core.experiment.config import ExperimentConfig
from core.jobs.cells import train_claimed
from core.jobs.spec import StudySpec, run_key
from core.jobs.studies import load_spec, open_study
from core.store import Store
from core.store.leases import CellSpec, Leases


def test_two_workers_on_one_study_train_each_cell_once(pg_url):
    store = Store(pg_url)
    # Cells of a second or so: both workers start (a few seconds of imports) before the first is done with all.
    base = ExperimentConfig(n_samples=200, epochs=150, diagnostics="loss").to_dict()
    study_id = open_study(store, StudySpec(name="two workers", base=base,
                                           vary={"batchnorm": [False, True], "lr": [0.01, 0.1]}, seeds=2))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "core", "worker", "--study", "two workers", "--db", pg_url,
                               "--poll", "0.2"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = []
    for proc in procs:
        code, log = proc.wait(timeout=300), proc.stderr.read()
        assert code == 0, log
        logs.append(log)
    runs = store.list_runs(study_id=study_id)
    spec = load_spec(store, study_id)
    assert len(runs) == 8 and {r.status for r in runs} == {"finished"}
    assert len({run_key(spec, r.config) for r in runs}) == 8
    assert [c["attempts"] for c in Leases(store).cells(study_id)] == [1] * 8
    assert sum(log.count(": finished") for log in logs) == 8
    assert len({r.pid for r in runs}) == 2 and all(r.host for r in runs)  # both trained, each recorded its host


def test_a_worker_with_population_trains_the_cells_that_group_as_one_population(pg_url):
    """`--population N`: each claim takes up to N cells that can share a model (here the two batch sizes make two
    groups) and trains them side by side; every member's values are those of its cell trained alone."""
    import io

    import numpy as np

    from core.cli.main import main

    store = Store(pg_url)
    base = ExperimentConfig(n_samples=200, epochs=4, diagnostics="loss").to_dict()
    vary = {"lr": [0.01, 0.3], "batch_size": [16, 32]}
    ids = {name: open_study(store, StudySpec(name=name, base=base, vary=vary, seeds=2)) for name in ("pop", "alone")}
    for name, flags in (("pop", ["--population", "8"]), ("alone", [])):
        err = io.StringIO()
        assert main(["worker", "--study", name, "--db", pg_url, *flags], out=io.StringIO(), err=err, env={}) == 0, \
            err.getvalue()
    groups: dict[str, set[int]] = {}
    for cell in Leases(store).cells(ids["pop"]):
        groups.setdefault(cell["holder"], set()).add(json.loads(cell["cell"])[0][1])  # holder -> batch sizes
    assert sorted(groups.values(), key=min) == [{16}, {32}]  # two populations of four, one per batch size
    assert len({c["holder"] for c in Leases(store).cells(ids["alone"])}) == 8  # one claim a cell
    spec = load_spec(store, ids["pop"])
    alone = {run_key(spec, r.config): r for r in store.list_runs(study_id=ids["alone"])}
    members = store.list_runs(study_id=ids["pop"])
    assert len(members) == 8 and {r.status for r in members} == {"finished"}
    for run in members:
        twin = alone[run_key(spec, run.config)]
        for key in ("train_loss", "val_loss"):
            got, want = store.series(run.id, key), store.series(twin.id, key)
            assert np.array_equal(got["step"], want["step"])
            np.testing.assert_allclose(got["value"], want["value"], rtol=1e-5, atol=1e-6)
    err = io.StringIO()
    assert main(["worker", "--population", "0", "--db", pg_url], out=io.StringIO(), err=err, env={}) == 2
    assert "population" in err.getvalue() and "1 to 1024" in err.getvalue()


def test_a_worker_with_nothing_to_do_says_so(pg_url):
    import io

    from core.cli.main import main

    err = io.StringIO()
    assert main(["worker", "--db", pg_url], out=io.StringIO(), err=err, env={}) == 0
    assert "trained 0 cells" in err.getvalue()
    assert main(["worker", "--study", "nosuch", "--db", pg_url], out=io.StringIO(), err=err, env={}) == 2


def test_a_worker_on_a_built_in_study_not_stored_yet_stores_and_trains_it(tmp_path):
    import io

    from core.cli.main import main

    db, err = f"sqlite:///{tmp_path / 'w.db'}", io.StringIO()
    assert main(["worker", "--study", "bn-act-loss", "--population", "24", "--db", db], out=io.StringIO(), err=err,
                env={}) == 0, err.getvalue()
    store = Store(db)
    (study,) = store.list_studies()
    assert study.name == "bn-act-loss" and "trained 24 cells" in err.getvalue()
    assert sorted(r.status for r in store.list_runs()) == ["finished"] * 24
    err = io.StringIO()  # and by its id, with nothing left
    assert main(["worker", "--study", str(study.id), "--db", db], out=io.StringIO(), err=err, env={}) == 0
    assert "trained 0 cells" in err.getvalue()


def test_a_server_that_goes_away_mid_run_leaves_the_run_marked_and_its_values(pg_server):
    """The server stops (as on a power cut) while a cell trains: the trainer stops at its next flush, and once
    the server is back the run is marked interrupted with what happened, every value stored before kept."""
    url = pg_server.database("lost")
    store = Store(url)
    study_id = store.create_study("lost", {})
    leases = Leases(store, timeout_s=30)
    config = ExperimentConfig(n_samples=1000, epochs=2000, diagnostics="loss").to_dict()
    leases.publish(study_id, [CellSpec(position=0, cell="[[], 0]", name="lost", config=config)])
    claim = leases.claim("test", study_id=study_id, host="here", pid=os.getpid())
    done = []
    trainer = threading.Thread(target=lambda: done.append(train_claimed(store, leases, claim, host="here",
                                                                        record_within_s=120)))
    trainer.start()
    watcher = Store(url)
    deadline = time.monotonic() + 60
    while watcher.get_run(claim.run_id).progress_step < 1000 and time.monotonic() < deadline:
        time.sleep(0.1)
    before = watcher.series(claim.run_id, "train_loss")["step"]
    watcher.close()
    assert len(before) > 0
    pg_server.stop("immediate")
    try:
        time.sleep(3)
    finally:
        pg_server.start()
    trainer.join(timeout=180)
    assert not trainer.is_alive() and done
    run = store.get_run(claim.run_id)
    assert run.status == "interrupted", run.error
    assert "lost the connection to the database server" in run.error and "kept" in run.error
    after = store.series(claim.run_id, "train_loss")["step"]
    assert list(after[:len(before)]) == list(before)  # nothing stored before the loss went missing
    assert done[0].state == "open" and leases.counts(study_id)["claimable"] == 1  # rerun when resumed
