"""Studies on a temporary database: the grid, parallel workers, resume after a killed worker, failures that stay
local, cancel, bad input, and the effects table against a hand computation."""

import argparse
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core.analysis.effects import effects, effects_sentences, ranking
from core.cli.study import add_study_parser, cmd_study, spec_from_args
from core.experiment.config import ConfigError, ExperimentConfig
from core.jobs.scheduler import resume_study, run_study
from core.jobs.spec import STUDIES, StudySpec, expand, run_key
from core.jobs.studies import (cancel_study, load_spec, open_study, plan_study, progress, sort_slots,
                              study_frame)
from core.store import Store
from core.store.leases import CellSpec, Leases, SlotRun

FAST = ["--epochs", "1", "--n-samples", "200", "--diagnostics", "loss"]
SMALL_GRID = ["--vary", "batchnorm=false,true", "--vary", "loss=bce,bce_with_logits", "--seeds", "2", *FAST]


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_study_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["study", *argv])


def study(*argv, db):
    out, err = io.StringIO(), io.StringIO()
    code = cmd_study(parse(*argv), Store(db), out, err)
    return code, out.getvalue(), err.getvalue()


def slots_of(store, study_id):
    spec = load_spec(store, study_id)
    return [run_key(spec, r.config) for r in store.list_runs(study_id=study_id)]


def assert_one_finished_run_per_slot(store, study_id, n):
    runs = store.list_runs(study_id=study_id)
    slots = slots_of(store, study_id)
    assert len(runs) == n and {r.status for r in runs} == {"finished"}
    assert None not in slots and len(set(slots)) == n


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------- end to end
def test_small_study_end_to_end_then_resume_replaces_a_dead_run(db):
    code, out, err = study(*SMALL_GRID, "--workers", "2", "--json", db=db)
    assert code == 0, err
    summary = json.loads(out)
    store = Store(db)
    runs = store.list_runs(study_id=summary["id"])
    assert summary["runs"] == len(runs) == 8 and summary["status_counts"] == {"finished": 8}
    assert_one_finished_run_per_slot(store, summary["id"], 8)
    assert all(r.study_id == summary["id"] for r in runs)
    assert err.count("finished, final val_loss") == 8 and "[8/8]" in err
    assert "8 to run on 2 workers\nTrains as 2 batched models of 4 runs each, side by side.\n" in err
    assert [row["n"] for row in summary["ranking"]] == [2, 2, 2, 2]
    assert [(e["factor"], e["level"], e["baseline"]) for e in summary["effects"]] == [
        ("batchnorm", True, False), ("loss", "bce_with_logits", "bce")]
    assert summary["judge"] == "exact_loss" and summary["metric"] == "final_val_loss_logits"
    assert len(summary["sentences"]) == 3 and len(summary["interactions"]) == 1  # 2 effects, 1 interaction

    # The effects table, by hand from the stored summaries: per seed, the mean over the other field's levels.
    value = {(r.config["batchnorm"], r.config["loss"], r.config["seed"]): r.summary["final_val_loss_logits"]
             for r in runs}
    for e in summary["effects"]:
        if e["factor"] == "batchnorm":
            d = [np.mean([value[(True, loss, s)] - value[(False, loss, s)] for loss in ("bce", "bce_with_logits")])
                 for s in (0, 1)]
        else:
            d = [np.mean([value[(bn, "bce_with_logits", s)] - value[(bn, "bce", s)] for bn in (False, True)])
                 for s in (0, 1)]
        half = stats.t.ppf(0.975, 1) * np.std(d, ddof=1) / math.sqrt(2)
        assert e["difference"] == pytest.approx(np.mean(d), abs=1e-12)
        assert (e["ci_low"], e["ci_high"]) == pytest.approx((np.mean(d) - half, np.mean(d) + half), abs=1e-12)

    # The same command again: nothing to do, nothing added.
    code, _, err = study(*SMALL_GRID, db=db)
    assert code == 0 and "8 done" in err and "0 to run" in err and "Trains as" not in err
    assert len(store.list_runs(study_id=summary["id"])) == 8

    # A run left "running" by a process that died is marked interrupted and replaced by a fresh run.
    victim, spec = runs[3], load_spec(store, summary["id"])
    store.start_run(victim.id, device="cpu", dtype="float32", torch_version="x", total_steps=5, pid=dead_pid(),
                    host=socket.gethostname())
    # What the Studies page reads before a launch (`sort_slots`) writes nothing: the dead run still counts as busy.
    # A launch (`plan_study`) marks it interrupted first, and its cell is the one to train.
    looked = sort_slots(store, summary["id"])
    assert looked.todo == [] and [r.id for r in looked.busy.values()] == [victim.id] and len(looked.kept) == 7
    assert store.get_runs([victim.id])[0].status == "running"
    planned = plan_study(store, summary["id"])
    assert [run_key(spec, slot.cfg.to_dict()) for slot in planned.todo] == [run_key(spec, victim.config)]
    assert planned.busy == {} and list(planned.replace.values()) == [[victim.id]] and planned.kept == looked.kept
    assert sort_slots(store, summary["id"]).todo == planned.todo  # now marked: the same answer as a launch's
    code, _, err = study("--study", summary["name"], db=db)
    assert code == 0, err
    assert_one_finished_run_per_slot(store, summary["id"], 8)
    assert victim.id not in {r.id for r in store.list_runs(study_id=summary["id"])}


def test_resume_after_a_killed_worker_finishes_the_rest_without_duplicates(db):
    store = Store(db)
    spec = StudySpec(name="killed", base=ExperimentConfig(n_samples=1000, epochs=20, diagnostics="loss").to_dict(),
                     vary={"activation": ["relu", "elu"], "loss": ["bce", "bce_with_logits"]}, seeds=2)
    study_id = open_study(store, spec)
    killed: list[int] = []

    def kill_a_worker_mid_run():
        """Once every run is created (so no replacement worker is needed), SIGKILL the worker of a running one."""
        watcher = Store(db)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = watcher.list_runs(study_id=study_id)
            running = [r for r in runs if r.status == "running" and r.pid and r.total_steps
                       and r.progress_step < r.total_steps // 2]  # well before its end
            if len(runs) == 8 and running:
                os.kill(running[0].pid, signal.SIGKILL)  # a worker resume_study spawned in this process
                killed.append(running[0].id)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_worker_mid_run)
    killer.start()
    outcome = resume_study(store, study_id, workers=2)
    killer.join()
    assert len(killed) == 1
    runs = {r.id: r for r in store.list_runs(study_id=study_id)}
    assert len(runs) == 8 and runs[killed[0]].status == "interrupted"
    assert sorted(r.status for r in runs.values()).count("finished") == 7
    assert outcome.remaining == 1 and not outcome.cancelled
    assert progress(store, study_id)["interrupted"] == 1

    outcome = resume_study(store, study_id, workers=2)
    assert_one_finished_run_per_slot(store, study_id, 8)
    assert len(outcome.run_ids) == 1 and outcome.kept == 7 and outcome.remaining == 0
    assert killed[0] not in {r.id for r in store.list_runs(study_id=study_id)}


@pytest.mark.parametrize("population", [True, False])
def test_two_schedulers_of_one_study_at_once_train_each_cell_once(db, population):
    """The same study command twice at once (a second terminal, a resume from the dashboard): each slot's run is
    created by whichever scheduler takes it first (`Leases.take`), never by both; the other says the runs train
    in another process. Before, both planned an empty study and trained every cell, 16 runs for 8."""
    argv = [sys.executable, "-m", "core", "--db", db, "study", "--preset", "article-fixed", "--vary",
            "lr=0.01,0.1", "--vary", "epochs=30,100", "--hidden", "32", "--seeds", "2", "--workers", "1",
            *([] if population else ["--no-population"])]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [proc.communicate(timeout=300)[1] for proc in procs]
    store = Store(db)
    (study_id,) = [s.id for s in store.list_studies()]
    finished = [r for r in store.list_runs(study_id=study_id) if r.status == "finished"]
    assert len(store.list_runs(study_id=study_id)) == 8, logs
    assert len({run_key(load_spec(store, study_id), r.config) for r in store.list_runs(study_id=study_id)}) == 8
    assert len(finished) == 8 or any("training in another process" in log for log in logs), logs


def test_a_scheduler_and_a_worker_share_a_study_each_cell_once(db):
    """`study` and `worker --study` on one study at once: the worker publishes the cells and claims those no
    run has; the scheduler creates a run only for a slot nobody took since its plan, and leases its cell."""
    name = "shared by a scheduler and a worker"
    study = [sys.executable, "-m", "core", "--db", db, "study", "--name", name, "--preset", "article-fixed",
             "--vary", "lr=0.01,0.1", "--vary", "epochs=40,120", "--hidden", "32", "--seeds", "2", "--workers", "1",
             "--no-population"]
    scheduler = subprocess.Popen(study, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store = Store(db)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not store.list_runs():  # the scheduler has started its first run
        time.sleep(0.05)
    worker = subprocess.run([sys.executable, "-m", "core", "--db", db, "worker", "--study", name, "--poll", "0.2"],
                            capture_output=True, text=True, timeout=300)
    log = scheduler.communicate(timeout=300)[1]
    assert worker.returncode == 0, worker.stderr
    (study_id,) = [s.id for s in store.list_studies()]
    runs = store.list_runs(study_id=study_id)
    assert len(runs) == 8 and {r.status for r in runs} == {"finished"}, (log, worker.stderr)
    assert len({run_key(load_spec(store, study_id), r.config) for r in runs}) == 8
    assert len({r.pid for r in runs}) >= 2  # both trained some of it
    assert {c["state"] for c in Leases(store).cells(study_id)} == {"done"}  # the scheduler handed its cells back


def test_a_local_claim_skips_a_taken_slot_replaces_a_dead_run_and_leases_the_cell(db):
    store = Store(db)
    spec = StudySpec(name="takes", base=ExperimentConfig(**{"epochs": 1}).to_dict(), vary={"lr": [0.01, 0.1]},
                     seeds=1)
    study_id = open_study(store, spec)
    slots = list(expand(spec))
    dead = store.create_run(name="dead", config=slots[1].cfg.to_dict(), study_id=study_id, status="interrupted")
    leases = Leases(store)
    leases.publish(study_id, [CellSpec(position=i, cell=str(i), name=f"c{i}", config=s.cfg.to_dict())
                              for i, s in enumerate(slots)])
    wanted = [SlotRun(key=run_key(spec, s.cfg.to_dict()), name=f"s{i}", config=s.cfg.to_dict(),
                      replaces=(dead,) if i == 1 else ()) for i, s in enumerate(slots)]
    key_of = lambda config: run_key(spec, config)  # noqa: E731
    first = leases.take(study_id, wanted, key_of=key_of, holder="a", host="h", pid=1)
    assert None not in first and dead not in {r.id for r in store.list_runs(study_id=study_id)}
    assert leases.take(study_id, wanted, key_of=key_of, holder="b", host="h", pid=2) == [None, None]
    assert [(c["state"], c["run_id"], c["holder"]) for c in leases.cells(study_id)] == [
        ("leased", first[0], "a"), ("leased", first[1], "a")]
    assert leases.claim("worker", study_id=study_id) is None  # a worker finds nothing to claim
    store.finish_run(first[0], status="finished", summary={}, wall_time_s=1.0)
    store.finish_run(first[1], status="cancelled", summary={}, wall_time_s=1.0)
    leases.hand_back(study_id, first)
    assert [c["state"] for c in leases.cells(study_id)] == ["done", "stopped"]


def test_failing_and_diverging_runs_are_recorded_and_the_others_finish(db, tmp_path):
    store = Store(db)
    # csv runs fail (the file is missing: the command line would refuse it up front, the API lets it through);
    # lr 90 with plain SGD diverges.
    base = ExperimentConfig(n_samples=200, epochs=3, diagnostics="loss", optimizer="sgd", hidden=(64, 64),
                            activation="elu", loss="bce_with_logits", csv_path=str(tmp_path / "missing.csv"))
    spec = StudySpec(name="mixed", base=base.to_dict(), vary={"dataset": ["gaussian", "csv"], "lr": [0.01, 90.0]},
                     seeds=2)
    outcome = run_study(store, spec, workers=1)  # one worker: a failure must not stop it either
    frame = study_frame(store, outcome.study_id)
    assert len(frame) == 8 and outcome.remaining == 0
    status = {(row.dataset, row.lr): set() for row in frame.itertuples()}
    for row in frame.itertuples():
        status[(row.dataset, row.lr)].add(row.status)
    assert status[("csv", 0.01)] == status[("csv", 90.0)] == {"failed"}
    assert status[("gaussian", 0.01)] == {"finished"} and status[("gaussian", 90.0)] == {"diverged"}
    assert frame.loc[frame.status == "failed", "error"].str.contains("missing.csv").all()
    table = ranking(frame)
    assert table.iloc[0]["variant"] == "dataset=gaussian lr=0.01" and table.iloc[0]["n"] == 2
    assert table.set_index("variant").loc["dataset=gaussian lr=90.0", "diverged"] == 2
    # Only finished runs are results: no level of lr or dataset has results at both levels for a seed.
    assert effects(frame)["n_seeds"].tolist() == [0, 0]


def test_cancel_stops_scheduling_and_resume_reruns_the_cancelled(db):
    store = Store(db)
    spec = StudySpec(name="cancel-me", base=ExperimentConfig(n_samples=400, epochs=2, diagnostics="loss").to_dict(),
                     vary={"batchnorm": [False, True], "loss": ["bce", "bce_with_logits"]}, seeds=2)
    study_id = open_study(store, spec)
    seen = []

    def on_finished(event):
        seen.append(event.run.status)
        if len(seen) == 1:
            cancel_study(store, study_id)

    outcome = resume_study(store, study_id, workers=2, on_finished=on_finished)
    runs = store.list_runs(study_id=study_id)
    assert outcome.cancelled and len(runs) == 2 and outcome.remaining >= 6
    assert {r.status for r in runs} <= {"finished", "cancelled"}

    outcome = resume_study(store, study_id, workers=1)
    assert_one_finished_run_per_slot(store, study_id, 8)
    assert not outcome.cancelled and outcome.remaining == 0


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, field", [
    (["--vary", "nosuch=1,2"], "nosuch"),
    (["--vary", "lr=0.1,abc"], "lr"),
    (["--vary", "batch_size=1,32", "--batchnorm", "--hidden", "16"], "batch_size"),
    (["--vary", "loss=bce,bce_with_logits", "--clamp-eps", "1e-7"], "clamp_eps"),
    (["--vary", "seed=1,2"], "seed"),
    (["--vary", "lr"], "vary"),
    (["--vary", "lr=0.1,0.1"], "lr"),
    (["--vary", "lr=0.1", "--vary", "lr=0.2"], "lr"),
    (["--seeds", "0"], "seeds"),
    (["--workers", "none"], "workers"),
    (["--study", "no-such-study"], "study"),
    (["--study", "bn-act-loss", "--preset", "article-example"], "preset"),
    (["--dataset", "csv", "--csv-path", "/no/such/file.csv"], "csv_path"),
])
def test_bad_input_names_the_field_and_creates_nothing(db, argv, field):
    with pytest.raises(ConfigError) as exc:
        study(*argv, *FAST, db=db)
    assert exc.value.field == field
    store = Store(db)
    assert store.list_runs() == [] and store.list_studies() == []


def test_invalid_combination_message_names_the_variant(db):
    with pytest.raises(ConfigError, match=r"batch_size: must be at least 2 with batchnorm .*batch_size=1"):
        study("--vary", "batch_size=1,32", "--batchnorm", db=db)


def test_a_name_means_one_grid(db):
    store = Store(db)
    open_study(store, StudySpec(name="mine", base=ExperimentConfig().to_dict(), vary={"lr": [0.1, 0.2]}))
    with pytest.raises(ConfigError) as exc:
        study("--name", "mine", "--vary", "lr=0.1,0.3", db=db)
    assert exc.value.field == "name" and "lr" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        study("--study", "mine", "--epochs", "3", db=db)
    assert exc.value.field == "study"
    assert store.list_runs() == []


# ---------------------------------------------------------------------- the spec
def test_spec_expands_seed_major_and_round_trips_through_the_store(db):
    store = Store(db)
    spec = StudySpec(name=" grid ", base={"epochs": 2}, vary={"hidden": ["[8]", [8, 8]], "batchnorm": ["no", "yes"]},
                     seeds=2)
    assert spec.name == "grid" and spec.vary == {"hidden": ((8,), (8, 8)), "batchnorm": (False, True)}
    slots = expand(spec)
    assert spec.size == len(slots) == 8
    assert [(s.seed, s.variant["hidden"], s.variant["batchnorm"]) for s in slots[:4]] == [
        (0, (8,), False), (0, (8,), True), (0, (8, 8), False), (0, (8, 8), True)]
    assert all(s.cfg.seed == s.seed and s.cfg.epochs == 2 and s.cfg.hidden == s.variant["hidden"] for s in slots)
    study_id = open_study(store, spec)
    assert load_spec(store, study_id) == spec and open_study(store, spec) == study_id
    assert run_key(spec, slots[7].cfg.to_dict()) == (((8, 8), True), 1)
    assert run_key(spec, {**slots[5].cfg.to_dict(), "seed": 7}) is None


def test_a_study_as_the_template_of_a_new_one(db):
    args = parse("--study", "bn-act-loss", "--name", "quick", "--epochs", "2", "--vary", "activation=tanh",
                 "--seeds", "2")
    spec, study_id = spec_from_args(args, Store(db))
    assert study_id is None and spec.name == "quick" and spec.seeds == 2 and spec.size == 8
    assert spec.base["epochs"] == 2 and spec.base["dataset"] == STUDIES["bn-act-loss"].base["dataset"]
    assert spec.vary["activation"] == ("tanh",) and spec.vary["loss"] == ("bce", "bce_with_logits")
    # Without --study the base is built exactly as for `train`: preset, then flags.
    spec, _ = spec_from_args(parse("--preset", "mlp-bn-logits", "--lr", "0.5", "--vary", "hidden=[8],[8,8]"),
                             Store(db))
    assert spec.base["dataset"] == "moons" and spec.base["lr"] == 0.5 and spec.vary["hidden"] == ((8,), (8, 8))
    assert spec_from_args(parse("--preset", "mlp-bn-logits", "--lr", "0.5", "--vary", "hidden=[8],[8,8]"),
                          Store(db))[0].name == spec.name  # named after its grid: the same command, the same study


def test_a_stored_study_is_named_by_its_name_or_its_id_and_a_wrong_name_lists_both_kinds(db):
    store = Store(db)
    study_id = open_study(store, StudySpec.from_dict({**STUDIES["bn-act-loss"].to_dict(), "name": "mine"}))
    spec, found = spec_from_args(parse("--study", str(study_id)), store)
    assert found == study_id and spec.name == "mine"  # resumed by id, as export and the page name it
    with pytest.raises(ConfigError) as info:
        spec_from_args(parse("--study", "nope"), store)
    assert info.value.field == "study" and "(stored: mine)" in str(info.value) and "bn-act-loss" in str(info.value)
    with pytest.raises(ConfigError, match="stored: mine"):
        spec_from_args(parse("--study", str(study_id + 1)), store)  # an id nothing has
    assert store.list_runs() == []


def test_the_canonical_study():
    spec = STUDIES["bn-act-loss"]
    assert spec.size == 24 and spec.seeds == 3
    assert spec.vary == {"batchnorm": (False, True), "activation": ("relu", "elu"), "loss": ("bce", "bce_with_logits")}


# ---------------------------------------------------------------------- the analysis, by hand
def _frame(rng, seeds=4):
    rows = []
    run_id = 0
    for a in (False, True):
        for b in ("x", "y", "z"):
            for seed in range(seeds):
                run_id += 1
                value = 1.0 + 0.3 * a - 0.1 * (b == "y") + 0.05 * (b == "z") + rng.normal(0, 0.05)
                rows.append({"run_id": run_id, "status": "finished", "a": a, "b": b, "seed": seed,
                             "final_val_loss": value, "best_val_loss": value - 0.1, "final_val_auc": 0.9})
    return pd.DataFrame(rows)


def _manual(frame, factor, level, baseline, other):
    ok = frame[frame.status == "finished"]
    diffs = []
    for seed, g in ok.groupby("seed"):
        pairs = []
        for o in frame[other].unique():
            hi = g[(g[factor] == level) & (g[other] == o)]["final_val_loss"]
            lo = g[(g[factor] == baseline) & (g[other] == o)]["final_val_loss"]
            if len(hi) and len(lo):
                pairs.append(hi.mean() - lo.mean())
        if pairs:
            diffs.append(np.mean(pairs))
    d = np.array(diffs)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    return d.mean(), lo, hi, len(d), stats.ttest_1samp(d, 0.0).pvalue


def test_effects_match_a_hand_computation():
    frame = _frame(np.random.default_rng(0))
    table = effects(frame)
    assert list(zip(table.factor, table.level, table.baseline)) == [("a", True, False), ("b", "y", "x"),
                                                                    ("b", "z", "x")]
    for row in table.itertuples():
        other = "b" if row.factor == "a" else "a"
        mean, lo, hi, n, p = _manual(frame, row.factor, row.level, row.baseline, other)
        assert (row.difference, row.ci_low, row.ci_high, row.n_seeds) == pytest.approx((mean, lo, hi, n), abs=1e-12)
        assert row.p_value == pytest.approx(p, rel=1e-9)
    # On a complete grid the per-seed difference is the difference of marginal means.
    marginal = frame.groupby(["a", "seed"])["final_val_loss"].mean().unstack("seed")
    assert table.iloc[0].difference == pytest.approx((marginal.loc[True] - marginal.loc[False]).mean(), abs=1e-12)
    assert table.iloc[0].clear and table.iloc[0].ci_low > 0.2


def test_effects_skip_runs_without_a_result_pairwise():
    frame = _frame(np.random.default_rng(1))
    frame.loc[(frame.a == True) & (frame.b == "y") & (frame.seed == 2), "status"] = "diverged"  # noqa: E712
    frame.loc[frame.seed == 3, "status"] = "failed"
    row = effects(frame).iloc[0]
    mean, lo, hi, n, _ = _manual(frame, "a", True, False, "b")
    assert n == 3 and row.n_seeds == 3 and row.pairs == 8
    assert (row.difference, row.ci_low, row.ci_high) == pytest.approx((mean, lo, hi), abs=1e-12)


def test_ranking_means_and_order():
    frame = _frame(np.random.default_rng(2))
    frame.loc[0, "status"] = "diverged"
    table = ranking(frame)
    assert table["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert table["variant"].tolist()[:3] == ["a=false b=y", "a=false b=x", "a=false b=z"]
    first = frame[(frame.a == False) & (frame.b == "x") & (frame.status == "finished")]  # noqa: E712
    row = table.set_index("variant").loc["a=false b=x"]
    assert (row.n, row.runs, row.diverged) == (3, 4, 1)
    assert row.final_val_loss_mean == pytest.approx(first.final_val_loss.mean())
    assert row.final_val_loss_sd == pytest.approx(first.final_val_loss.std(ddof=1))


def test_effects_sentences():
    table = pd.DataFrame([
        {"factor": "loss", "level": "bce_with_logits", "baseline": "bce", "metric": "final_val_loss",
         "difference": -0.21, "ci_low": -0.27, "ci_high": -0.15, "n_seeds": 3, "clear": True},
        {"factor": "batchnorm", "level": True, "baseline": False, "metric": "final_val_loss",
         "difference": 0.012, "ci_low": -0.03, "ci_high": 0.05, "n_seeds": 3, "clear": False},
        {"factor": "lr", "level": 0.1, "baseline": 0.01, "metric": "final_val_auc",
         "difference": 0.05, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 1, "clear": False},
        {"factor": "activation", "level": "elu", "baseline": "relu", "metric": "final_val_auc",
         "difference": 0.0312, "ci_low": 0.0105, "ci_high": 0.052, "n_seeds": 3, "clear": True},
    ])
    assert effects_sentences(table) == [
        "bce_with_logits instead of bce lowers final val loss by 0.21 (95% CI 0.15 to 0.27).",
        "BatchNorm made no clear difference to final val loss (+0.012, 95% CI -0.03 to 0.05 includes 0).",
        "lr 0.1 instead of 0.01 cannot be judged on final val AUC yet: that needs results at both levels for at "
        "least 2 seeds (there is 1).",
        "elu instead of relu raises final val AUC by 0.031 (95% CI 0.011 to 0.052).",
    ]
    from core.analysis.effects import choice_words
    # whole numbers of an integer field read back from a frame as floats are written as the field's values
    assert choice_words("epochs", 100.0, 30.0) == "epochs 100 instead of 30"
    assert choice_words("lr", 1.0, 0.5) == "lr 1.0 instead of 0.5"  # a float field keeps its floats


# ---------------------------------------------------------------------- read helpers for the dashboard
def test_list_studies_with_progress_and_existing_study(db):
    from core.jobs.studies import existing_study, list_studies_with_progress

    store = Store(db)
    assert list_studies_with_progress(store) == []
    first = StudySpec(name="first", base=ExperimentConfig().to_dict(), vary={"lr": [0.1, 0.2]}, seeds=2)
    second = StudySpec(name="second", base=ExperimentConfig().to_dict(), vary={}, seeds=1)
    assert existing_study(store, first) is None and store.list_studies() == []  # creates nothing
    first_id, second_id = open_study(store, first), open_study(store, second)
    slot = expand(first)[0]
    run_id = store.create_run(name="r", config=slot.cfg.to_dict(), study_id=first_id)
    store.finish_run(run_id, status="diverged", summary={})
    store.create_run(name="r2", config=expand(first)[1].cfg.to_dict(), study_id=first_id)
    items = list_studies_with_progress(store)
    assert [i.study.id for i in items] == [second_id, first_id]  # newest first
    assert items[1].counts == progress(store, first_id) and items[1].counts["diverged"] == 1
    assert (items[1].done, items[1].complete, items[0].done, items[0].complete) == (1, False, 0, False)
    assert existing_study(store, first) == first_id
    with pytest.raises(ConfigError) as exc:
        existing_study(store, StudySpec(name="first", base=ExperimentConfig().to_dict(), vary={"lr": [0.3]}))
    assert exc.value.field == "name" and "another grid" in str(exc.value)


def test_a_worker_opens_its_store_again_after_a_refusal(tmp_path, monkeypatch):
    """A worker that cannot open the store at its start would die with its run's cell: a refusal is tried again
    (here the first two attempts fail), and one that lasts is raised for the scheduler to record."""
    import core.store
    from core.jobs import population_worker

    calls = []

    def refuses(times):
        def open_(url):
            calls.append(url)
            if len(calls) <= times:
                raise ValueError("db: cannot open 'x': database is locked")
            return Store(url)
        return open_

    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setattr(core.store, "Store", refuses(2))
    assert population_worker.open_store(url, wait_s=0).list_runs() == [] and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(core.store, "Store", refuses(99))
    with pytest.raises(ValueError, match="database is locked"):
        population_worker.open_store(url, attempts=4, wait_s=0)
    assert len(calls) == 4


@pytest.mark.parametrize("base, vary, reason", [
    ({"hidden": []}, {"batchnorm": [False, True]}, "acts on hidden layers, and hidden is []"),
    ({"hidden": [8], "activation": "relu"}, {"elu_alpha": [0.5, 1.0]}, "applies only with activation elu"),
    ({"optimizer": "adam"}, {"momentum": [0.0, 0.9]}, "applies only to optimizer sgd"),
    ({}, {"csv_path": ["a.csv", "b.csv"]}, "applies only to dataset csv, not gaussian"),
])
def test_a_study_that_varies_a_field_with_no_effect_is_refused_before_it_is_stored(tmp_path, base, vary, reason):
    """QA: `--vary batchnorm=false,true` on a model with no hidden layer trained one model twice under two labels
    and reported "no clear difference (0, 95% CI 0 to 0)". Refused when the study is made; a field that acts in
    some variants (batchnorm with hidden=[] and [8]) is a fair grid."""
    from core.jobs.studies import open_study
    from core.store import Store

    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        spec = StudySpec(name="inert", base=base, vary=vary, seeds=1)  # a stored grid like it still loads
        with pytest.raises(ConfigError) as refused:
            open_study(store, spec)
        assert refused.value.field == next(iter(vary)) and reason in str(refused.value)
        assert store.list_studies() == []
        fair = StudySpec(name="fair", base={"hidden": []}, vary={"batchnorm": [False, True], "hidden": [[], [8]]},
                         seeds=1)
        assert open_study(store, fair) == store.get_study_by_name("fair").id
