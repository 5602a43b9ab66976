"""core.runner's studies: launched and resumed in a detached background process that outlives its caller,
cancelled through the store and a signal, and bad input refused before anything is stored or started."""

from __future__ import annotations

import argparse
import os
import sys
import time

import pytest

from core.cli.study import add_study_parser
from core.experiment.config import ConfigError, ExperimentConfig
from core.jobs import runner
from core.jobs.spec import StudySpec, run_key
from core.jobs.studies import load_spec, open_study
from core.store import Store

FAST = ExperimentConfig(epochs=1, n_samples=200, hidden=(4,), diagnostics="loss").to_dict()
WAIT_S = 180


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'runner.db'}") as s:
        yield s


def spec(name: str = "small", **vary) -> StudySpec:
    return StudySpec(name=name, base=FAST, vary=vary or {"batchnorm": [False, True]}, seeds=2)


def slots(store: Store, study_id: int) -> list:
    grid = load_spec(store, study_id)
    return [run_key(grid, r.config) for r in store.list_runs(study_id=study_id)]


def test_launch_study_returns_at_once_and_trains_the_grid_in_a_detached_process(store, tmp_path):
    grid = spec(loss=["bce", "bce_with_logits"], batchnorm=[False, True])
    start = time.monotonic()
    study_id = runner.launch_study(store, grid, workers=2, log_dir=tmp_path)
    assert time.monotonic() - start < 5  # the workers alone need seconds to import torch: it did not wait
    assert store.get_study(study_id).spec == grid.to_dict()
    proc = runner._study_processes[(store.url, study_id)]
    assert os.getsid(proc.pid) == proc.pid  # a session of its own: closing the tab or the terminal leaves it
    assert runner.study_running(store, study_id)
    assert runner.wait_study(store, study_id, timeout=WAIT_S) == 0
    assert not runner.study_running(store, study_id)
    runs = store.list_runs(study_id=study_id)
    assert len(runs) == 8 and {r.status for r in runs} == {"finished"} and len(set(slots(store, study_id))) == 8
    assert "8 runs; 0 done, 0 running elsewhere, 8 to run on 2 workers" in \
        runner.study_log_path(study_id, tmp_path).read_text()


def test_cancel_then_relaunch_finishes_the_rest_without_duplicates(store, tmp_path):
    slow = {**FAST, "n_samples": 1000}
    # Two epoch counts cannot share a population: one worker trains one population (its two seeds) after the other,
    # a short one and then one of several seconds, longer than a flush (a cancel is seen at a member's next flush).
    study_id = runner.launch_study(store, StudySpec(name="slow", base=slow, vary={"epochs": [20, 600]},
                                                    seeds=2), workers=1, log_dir=tmp_path)
    proc = runner._study_processes[(store.url, study_id)]
    assert runner.relaunch_study(store, study_id, log_dir=tmp_path) is False  # one scheduler per study
    assert runner.launch_study(store, load_spec(store, study_id), log_dir=tmp_path) == study_id
    assert runner._study_processes[(store.url, study_id)] is proc
    deadline = time.monotonic() + WAIT_S
    # Cancel while the second population trains. Between one's end and the next one's start the scheduler simply
    # starts no more runs, and then no run is left to be marked cancelled: wait for that gap to pass.
    while not ((statuses := [r.status for r in store.list_runs(study_id=study_id)]).count("finished") == 2
               and statuses.count("running") == 2):  # the first population done, both of the second one's runs made
        assert time.monotonic() < deadline
        time.sleep(0.05)
    running = runner.cancel_study(store, study_id)
    assert len(running) == 2  # the second population's two seeds
    runner.wait_study(store, study_id, timeout=WAIT_S)
    assert not runner.study_running(store, study_id)
    before = store.list_runs(study_id=study_id)
    assert "running" not in {r.status for r in before}
    kept = {r.id for r in before if r.status == "finished"}
    assert len(kept) == 2 and [r.status for r in before if r.id in running] == ["cancelled", "cancelled"]

    assert runner.relaunch_study(store, study_id, workers=2, log_dir=tmp_path) is True
    assert runner.wait_study(store, study_id, timeout=WAIT_S) == 0
    after = store.list_runs(study_id=study_id)
    assert len(after) == 4 and {r.status for r in after} == {"finished"}
    assert kept <= {r.id for r in after}  # finished runs were kept, not trained again
    assert len(set(slots(store, study_id))) == 4  # one run per (variant, seed)


def test_bad_input_is_refused_before_anything_is_stored_or_started(store, tmp_path):
    with pytest.raises(ConfigError) as exc:
        runner.launch_study(store, StudySpec(name="csv", base={**FAST, "dataset": "csv",
                                                               "csv_path": str(tmp_path / "missing.csv")}),
                            log_dir=tmp_path)
    assert exc.value.field == "csv_path"
    assert store.list_studies() == []
    open_study(store, spec("taken"))
    with pytest.raises(ConfigError) as exc:
        runner.launch_study(store, spec("taken", lr=[0.1, 0.2]), log_dir=tmp_path)
    assert exc.value.field == "name"
    assert [s.name for s in store.list_studies()] == ["taken"] and not runner._study_processes.get(
        (store.url, store.list_studies()[0].id))
    assert not list(tmp_path.glob("study-*.log"))


def test_the_scheduler_command_resumes_the_stored_study_by_name(store):
    command = runner.study_command(store, "-odd name", workers=3)
    assert command[:5] == [sys.executable, "-m", "core", "--db", store.url]
    parser = argparse.ArgumentParser()
    add_study_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(command[5:])  # a name starting with "-" is still the value of --study
    assert (args.command, args.study, args.workers, args.vary, args.preset) == ("study", "-odd name", "3", [], None)
    assert runner.study_command(store, "x")[-1] == "--study=x"
