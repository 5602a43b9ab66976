"""The command line end to end on a temporary database, in-process (fast) and once as a real subprocess."""

import csv
import io
import json
import socket
import subprocess
import sys

import pytest

from core import PROJECT_ROOT
from core.cli.main import main
from core.store import Store


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'cli.db'}"


def cli(*argv, db):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--db", db, *argv], out=out, err=err, env={})
    return code, out.getvalue(), err.getvalue()


def test_train_json_show_and_metrics(db, tmp_path):
    code, out, err = cli("train", "--preset", "article-example", "--epochs", "2", "--json", db=db)
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "finished" and result["summary"]["epochs_completed"] == 2
    assert result["summary"]["min_pred_pos_rate"] == 1.0
    code, out, _ = cli("show", str(result["id"]), "--json", db=db)
    shown = json.loads(out)
    assert shown["config"]["output_relu"] is True and shown["device"] == "cpu"
    assert {"train_loss", "clamp_frac", "val_loss"} <= set(shown["metric_keys"])
    code, out, _ = cli("metrics", str(result["id"]), "--key", "val_loss", "--format", "csv", db=db)
    rows = list(csv.DictReader(io.StringIO(out)))
    stored = Store(db).series(result["id"], "val_loss")["value"]
    assert [float(r["value"]) for r in rows] == pytest.approx(list(stored))
    assert [r["key"] for r in rows] == ["val_loss", "val_loss"]


def test_config_file_round_trip_with_flag_override(db, tmp_path):
    _, out, _ = cli("train", "--preset", "article-fixed", "--epochs", "1", "--json", db=db)
    _, shown, _ = cli("show", str(json.loads(out)["id"]), "--json", db=db)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(json.loads(shown)["config"]))
    code, out, err = cli("train", "--config", str(path), "--lr", "0.05", "--hidden", "8,8", "--json", db=db)
    assert code == 0, err
    _, shown2, _ = cli("show", str(json.loads(out)["id"]), "--json", db=db)
    cfg = json.loads(shown2)["config"]
    assert cfg["lr"] == 0.05 and cfg["hidden"] == [8, 8] and cfg["loss"] == "bce_with_logits"


def test_runs_tag_note_delete(db):
    _, out, _ = cli("train", "--dry-run", "--json", "--name", "first", db=db)
    run_id = json.loads(out)["id"]
    assert cli("tag", str(run_id), "baseline", db=db)[0] == 0
    assert cli("note", str(run_id), "looks fine", db=db)[0] == 0
    _, listed, _ = cli("runs", "--json", db=db)
    (run,) = json.loads(listed)
    # a dry run is marked as one: no one takes its single step for a result
    assert run["name"] == "first (dry run)" and run["tags"] == ["baseline", "dry-run"] and run["notes"] == "looks fine"
    assert "first" in cli("runs", db=db)[1]
    assert cli("delete", str(run_id), db=db)[0] == 0
    assert json.loads(cli("runs", "--json", db=db)[1]) == []


def test_data_past_memory_is_bad_input_and_a_dashboard_run_says_why_it_failed(db):
    argv = ["train", "--n-samples", "10000000", "--n-features", "100000", "--epochs", "1"]
    code, _, err = cli(*argv, db=db)
    assert code == 2 and "n_samples: 10,000,000 samples of 100,000 features do not fit in this machine's memory" in err
    assert Store(db).list_runs() == []
    # the dashboard made its run first: it ends failed, with the reason (it was left "interrupted", the
    # MemoryError's traceback only in the process's log)
    cfg = json.loads(cli("train", "--dry-run", "--json", db=db)[1])
    store = Store(db)
    run_id = store.create_run(name="huge", config={**store.get_run(cfg["id"]).config, "n_samples": 10_000_000,
                                                   "n_features": 100_000})
    code, _, err = cli(*argv, "--run-id", str(run_id), db=db)
    run = store.get_run(run_id)
    assert code == 2 and run.status == "failed" and "do not fit in this machine's memory" in run.error


def test_a_run_deleted_while_it_trains_stops_and_says_so(db):
    import threading
    import time

    store = Store(db)
    said = []

    def delete_when_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = store.list_runs()
            if runs and runs[0].status == "running":
                said.append(cli("delete", str(runs[0].id), db=db))
                return
            time.sleep(0.05)

    deleter = threading.Thread(target=delete_when_running)
    deleter.start()
    code, out, err = cli("train", "--preset", "article-fixed", "--epochs", "2000", "--json", db=db)
    deleter.join()
    (deleted,) = said
    assert deleted[0] == 0 and "it was training: its process stops at its next flush" in deleted[1]
    result = json.loads(out)  # still JSON: a script reading it learns what happened
    assert code == 1 and result["status"] == "deleted" and result["summary"] == {}
    assert result["error"] == f"run {result['id']} was deleted while it trained; training stopped and nothing of " \
                              "it is stored"
    assert store.list_runs() == []


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "nope"], "preset: 'nope' is not a preset"),
    (["train", "--name", "   "], "name: must not be empty"),
    (["train", "--name", "x" * 256], "name: must be at most 255 characters (got 256)"),
    (["train", "--name", "two\nlines"], "name: must not contain control characters such as a newline or a tab "
                                         "(got '\\n' at 4)"),
    (["study", "--preset", "article-fixed", "--vary", "lr=0.1,0.2", "--name", "x\ty"],
     "name: must not contain control characters"),
    (["train", "--lr", "0"], "lr: must be a number greater than 0"),
    (["train", "--lr", "fast"], "lr: 'fast' is not a finite number"),
    (["train", "--epochs", "0"], "epochs: must be a whole number from 1"),
    (["train", "--batchnorm", "--batch-size", "1"], "batch_size: must be at least 2 with batchnorm"),
    (["train", "--clamp-eps", "0.7"], "clamp_eps: must be a number greater than 0 and less than 0.5"),
    (["train", "--activation", "gelu"], "activation: 'gelu' is not allowed; choose one of: relu, elu"),
    (["train", "--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
    (["train", "--dataset", "csv", "--csv-path", "/nonexistent.csv"], "csv_path: no such file"),
    (["train", "--config", "/nonexistent.json"], "config: no such file"),
    (["train", "--config", "/"], "config: '/' is a folder; give a JSON file"),
    (["train", "--dataset", "csv", "--csv-path", "/"], "csv_path: '/' is a folder; give a CSV file"),
    (["show", "999"], "no run with id 999"),
    (["metrics", "999"], "no run with id 999"),
])
def test_bad_input_exits_2_with_one_line_and_no_run(db, argv, message):
    code, out, err = cli(*argv, db=db)
    assert code == 2
    assert message in err and err.count("\n") == 1, err
    assert Store(db).list_runs() == []


@pytest.mark.parametrize("text, message", [
    ("", "is empty"), ("a,label\nx,1\ny,0\n", "column 'a' is not numeric"),
    ("a,label\n1,1\n,0\n", "missing values"), ("a,label\n1,1\n2,0\n3,7\n", "exactly two classes"),
])
def test_bad_csv_exits_2(db, tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    code, _, err = cli("train", "--dataset", "csv", "--csv-path", str(path), db=db)
    assert code == 2 and message in err
    assert Store(db).list_runs() == []


def test_csv_training(db, tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w") as f:
        f.write("a,b,y\n")
        for i in range(60):
            f.write(f"{i % 7},{(i * 3) % 5},{int(i % 7 > 3)}\n")
    code, out, err = cli("train", "--dataset", "csv", "--csv-path", str(path), "--csv-label", "y", "--epochs", "2",
                         "--json", db=db)
    assert code == 0, err
    assert json.loads(out)["status"] == "finished"


def test_diverged_run_is_stored_as_diverged(db):
    code, out, _ = cli("train", "--optimizer", "sgd", "--lr", "90", "--loss", "bce_with_logits", "--hidden", "64,64",
                       "--epochs", "3", "--json", db=db)
    result = json.loads(out)
    assert code == 0 and result["status"] == "diverged"
    run = Store(db).get_run(result["id"])
    assert run.status == "diverged" and f"step {result['summary']['diverged_step']}" in run.error


def test_python_dash_m_core_as_a_subprocess(tmp_path):
    db = f"sqlite:///{tmp_path / 'sub.db'}"
    proc = subprocess.run([sys.executable, "-m", "core", "--db", db, "train", "--preset", "article-example",
                           "--epochs", "1", "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "finished"
    assert "step" in proc.stderr  # the progress bar
    bad = subprocess.run([sys.executable, "-m", "core", "--db", db, "train", "--lr", "-1"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: lr:")


def test_pre_created_run_that_cannot_start_is_marked_failed(db):
    store = Store(db)
    run_id = store.create_run(name="from the dashboard", config={})
    code, _, err = cli("train", "--run-id", str(run_id), "--device", "cuda" if not __import__("torch").cuda.is_available()
                       else "mps", db=db)
    assert code == 2 and "device:" in err
    run = store.get_run(run_id)
    assert run.status == "failed" and run.error.startswith("device:")


# ---------------------------------------------------------------------- --db before or after the subcommand
def run_main(*argv, env=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, env={} if env is None else env)
    return code, out.getvalue(), err.getvalue()


def test_db_works_after_the_subcommand_too(tmp_path, monkeypatch):
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    Store(f"sqlite:///{first}").create_run(name="in-first", config={})
    Store(f"sqlite:///{second}").create_run(name="in-second", config={})
    code, out, err = run_main("runs", "--db", f"sqlite:///{first}", "--json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)] == ["in-first"]
    monkeypatch.chdir(tmp_path)  # a bare file path means that SQLite file, relative to where the command runs
    code, out, err = run_main("runs", "--json", "--db", "second.db")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)] == ["in-second"]
    code, out, _ = run_main("show", "1", "--db", str(first), "--json")
    assert code == 0 and json.loads(out)["name"] == "in-first"


def test_db_after_the_subcommand_wins_over_one_before_it(tmp_path):
    first, second = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'second.db'}"
    Store(first).create_run(name="in-first", config={})
    Store(second).create_run(name="in-second", config={})
    code, out, _ = run_main("--db", first, "runs", "--db", second, "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["in-second"]
    code, out, _ = run_main("--db", first, "runs", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["in-first"]
    code, out, _ = run_main("runs", "--json", env={"LOSSBOARD_DB": second})  # no --db: the environment's
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["in-second"]


@pytest.mark.parametrize("command", ["train", "runs", "show", "metrics", "delete", "tag", "note", "export", "study"])
def test_every_subcommand_lists_db_in_its_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert "--db URL" in capsys.readouterr().out


@pytest.mark.parametrize("value, message", [
    ("notadriver://x", "db: cannot open 'notadriver://x': no SQLAlchemy driver for 'notadriver'"),
    ("sqlite://:bad:url:", None),
])
def test_a_bad_db_url_is_one_line_and_exit_code_2(value, message, tmp_path):
    code, out, err = run_main("runs", "--db", value)
    if message is None:  # SQLAlchemy reads some odd strings as URLs; whatever it does, no traceback
        assert code in (0, 2) and "Traceback" not in err
        return
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err


# ---------------------------------------------------------------------- the progress bar
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train_with_progress(db, stream) -> int:
    return main(["--db", db, "train", "--preset", "article-fixed", "--epochs", "3"], out=io.StringIO(), err=stream,
                env={})


def test_progress_bar_on_a_terminal(db):
    stream = _Terminal()
    assert _train_with_progress(db, stream) == 0
    text = stream.getvalue()
    assert text.startswith("training on cpu (float32), 75 steps\n")
    assert "\r" in text and "100%" in text and "step 75/75" in text  # tqdm's bar, redrawn in place, finished


def test_no_progress_bar_when_stderr_is_not_a_terminal(db):
    stream = io.StringIO()
    assert _train_with_progress(db, stream) == 0
    assert stream.getvalue() == "training on cpu (float32), 75 steps\n"  # one line, then quiet


def test_show_prints_the_findings_and_show_json_lists_them(db):
    code, out, err = cli("train", "--dataset", "breast_cancer", "--standardize", "false", "--hidden", "16",
                         "--optimizer", "adam", "--lr", "0.05", "--epochs", "2", "--json", db=db)
    assert code == 0, err
    run_id = json.loads(out)["id"]
    code, out, _ = cli("show", str(run_id), "--json", db=db)
    record = json.loads(out)
    first = record["findings"][0]
    assert set(first) >= {"severity", "title", "detail", "cause", "fix"}
    assert (first["cause"], first["fix"]) == ("unscaled inputs", {"standardize": True})
    assert record["summary"]["input_std_max"] > 100  # breast_cancer's raw features, as the first layer saw them
    code, out, _ = cli("show", str(run_id), db=db)
    assert "findings:" in out and "The inputs are not scaled" in out and 'cause: unscaled inputs; fix: standardize=true\n' in out


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_another_programs_database_or_a_newer_lossboards_is_refused_and_left_as_it_was(tmp_path):
    """`runs` on another program's SQLite file would have added Lossboard's tables to it; a database a newer
    Lossboard wrote gave Alembic's traceback. Each is one line, exit 2, and the file is not written."""
    import sqlite3

    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table users (id integer)")
    before = other.read_bytes()
    code, _, err = cli("runs", db=f"sqlite:///{other}")
    assert code == 2 and err == (f"error: db: 'sqlite:///{other}' is not a Lossboard store: it holds other tables "
                                 "(users) and no Lossboard schema; name a new file or an empty database\n")
    assert other.read_bytes() == before
    newer = tmp_path / "newer.db"
    Store(f"sqlite:///{newer}").close()
    with sqlite3.connect(newer) as conn:
        conn.execute("update alembic_version set version_num = '9999_future'")
    code, _, err = cli("runs", db=f"sqlite:///{newer}")
    assert code == 2 and "was written by a newer Lossboard (schema 9999_future; this one knows up to" in err
    assert len(err.splitlines()) == 1


def test_a_read_only_store_is_read_and_a_write_to_it_is_one_line(tmp_path):
    """A store opened read-only (a read-only file or mount; here SQLite's mode=ro, which holds for root too):
    `runs` lists it, even with a dead run that cannot be marked interrupted; `tag` says the database refused."""
    path = tmp_path / "ro.db"
    with Store(f"sqlite:///{path}") as store:
        ghost = store.create_run(name="ghost", config={})
        store.attach_process(ghost, pid=dead_pid(), host=socket.gethostname())
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    code, out, err = cli("runs", db=read_only)
    assert code == 0 and "ghost" in out, err
    code, _, err = cli("tag", str(ghost), "x", db=read_only)
    assert code == 2 and err.endswith("refused: attempt to write a readonly database\n") and len(err.splitlines()) == 1


@pytest.mark.parametrize("make, reason", [(lambda p: p.write_text("hello\n") and p, "file is not a database"),
                                          (lambda p: p.parent, "unable to open database file")])
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path, make, reason):
    target = make(tmp_path / "notes.db")
    out, err = io.StringIO(), io.StringIO()
    code = main(["runs", "--db", str(target)], out=out, err=err, env={})
    assert code == 2 and err.getvalue().startswith("error: db: cannot open ") and reason in err.getvalue()
    assert len(err.getvalue().splitlines()) == 1
    if target.is_file():
        assert target.read_text() == "hello\n"


def test_metrics_csv_writes_nan_and_inf_as_export_does(db):
    from core.training.reporting import MetricRow

    with Store(db) as store:
        run_id = store.create_run(name="nan", config={})
        store.log_metrics(run_id, [MetricRow("logit_mean", i, 0, v, 0.1 * i)
                                   for i, v in enumerate([0.5, float("nan"), float("inf")])])
    code, out, _ = cli("metrics", str(run_id), "--key", "logit_mean", "--format", "csv", db=db)
    values = [line.split(",")[3] for line in out.splitlines()[1:]]
    assert code == 0 and values == ["0.5", "NaN", "inf"], out


def test_runs_with_a_status_nothing_has_says_so_not_no_runs_yet(db):
    with Store(db) as store:
        store.create_run(name="one", config={})  # running
    code, out, _ = cli("runs", "--status", "diverged", db=db)
    assert code == 0 and out == "no diverged runs (1 runs in all: `python -m core runs`)\n"


def test_ctrl_c_stops_train_with_the_shells_code_and_the_run_cancelled(db):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "core", "--db", db, "train", "--preset", "article-fixed",
                             "--epochs", "5000"], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = Store(db)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [r for r in store.list_runs() if r.status == "running"]:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    (run,) = store.list_runs()
    assert proc.returncode == 130 and run.status == "cancelled"  # 0 had let `train && next` go on
    assert "cancelled - interrupted by the user" in out.decode()


def test_a_read_with_a_mistyped_db_folder_makes_nothing(tmp_path):
    missing = tmp_path / "no" / "such" / "x.db"
    for argv in (["runs"], ["show", "1"], ["export", "--runs", "1", "--out", str(tmp_path / "a.csv")]):
        code, _, err = cli(*argv, db=f"sqlite:///{missing}")
        assert code == 2 and f"db: no database at '{missing}': its folder does not exist" in err
    assert not (tmp_path / "no").exists()
    code, out, _ = cli("train", "--dry-run", db=f"sqlite:///{missing}")  # a write makes its folder, as before
    assert code == 0 and missing.exists()


def test_ctrl_c_while_the_command_line_starts_is_one_line(db):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "core", "--db", db, "train", "--preset", "article-fixed"],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.2)  # importing torch and the store: before `train` has its own handling
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err.decode()


def test_a_store_lost_mid_study_is_not_bad_input(db, monkeypatch):
    # what a stopped PostgreSQL server raises from the study's polling: exit 1 (resume later), not 2 ("refused")
    from sqlalchemy.exc import OperationalError

    from core.cli import study as study_cli

    def lost(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("the database system is shutting down"))

    monkeypatch.setattr(study_cli, "resume_study_populations", lost)
    code, _, err = cli("study", "--preset", "article-fixed", "--vary", "lr=0.1,0.2", "--seeds", "1", db=db)
    assert code == 1 and "stopped answering during the study: the database system is shutting down" in err
    assert "run the same command again to resume (python -m core study --study" in err
