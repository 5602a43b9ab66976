"""A database written by an earlier version opens in this one with everything in it: runs, configs, summaries,
tags, notes, studies and every metric value (NaN, +-Inf and -0.0 included).

`tests/fixtures/experiments-0001.db` was written by the release before the layered layout (commit f23e368, schema
revision 0001) with its own command line: five trained runs (a two-run study among them), a tag, a note, and a
hand-made run whose values are NaN, +Inf, -Inf and -0.0 (that version stored the -0.0 as 0). The expected values are read from the file with plain
sqlite3 before the store opens it, so the comparison is value by value against what that version wrote."""

from __future__ import annotations

import io
import math
import shutil
import sqlite3
from pathlib import Path

import pytest

from core import PROJECT_ROOT
from core.cli.main import main
from core.store import Store

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "experiments-0001.db"


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)
    return path


def raw_rows(path: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    with sqlite3.connect(path) as conn:
        runs = conn.execute("SELECT id, name, status, notes, study_id FROM runs ORDER BY id").fetchall()
        metrics = conn.execute("SELECT run_id, key, step, epoch, value, wall_time FROM metrics "
                               "ORDER BY run_id, key, step, id").fetchall()
        tags = conn.execute("SELECT run_id, tag FROM tags ORDER BY run_id, tag").fetchall()
    return runs, metrics, tags


def test_an_old_database_opens_with_every_run_and_value(old_db: Path):
    runs, metrics, tags = raw_rows(old_db)
    assert len(runs) == 6 and len(metrics) > 700 and tags == [(1, "baseline")]
    with Store(f"sqlite:///{old_db}") as store:
        stored = sorted(store.list_runs(), key=lambda r: r.id)
        assert [(r.id, r.name, r.status, r.notes, r.study_id) for r in stored] == runs
        assert store.get_run(1).tags == ("baseline",)
        assert store.get_run(2).notes == "lr too high"
        assert [s.name for s in store.list_studies()] == ["lr on gaussian, 1 seeds (955011bb)"]
        frame = store.metrics_frame([r.id for r in stored])
    got = list(frame[["run_id", "key", "step", "epoch", "value", "wall_time"]].itertuples(index=False, name=None))
    assert len(got) == len(metrics)
    for (run_id, key, step, epoch, value, wall), want in zip(got, metrics):
        assert (run_id, key, step, epoch, wall) == want[:4] + want[5:]
        if want[4] is None:  # NULL: the old store's NaN
            assert math.isnan(value)
        else:
            assert value == want[4] and math.copysign(1, value) == math.copysign(1, want[4])


def test_the_hand_made_run_keeps_nan_inf_and_negative_zero(old_db: Path):
    with Store(f"sqlite:///{old_db}") as store:
        run = next(r for r in store.list_runs() if r.name == "hand-made: nan and inf")
        loss = store.series(run.id, "train_loss")
        assert loss["step"].tolist() == [1, 2, 3, 4]
        assert loss["value"][0] == 0.5 and math.isnan(loss["value"][1]) and loss["value"][2] == math.inf
        assert loss["value"][3] == 0  # written as -0.0; SQLite keeps an integral REAL as an integer: the sign was lost
        assert store.series(run.id, "val_loss")["value"].tolist() == [-math.inf]
        assert run.status == "diverged" and math.isnan(run.summary["final_train_loss"])


def test_the_command_line_reads_an_old_database(old_db: Path):
    out, err = io.StringIO(), io.StringIO()
    assert main(["show", "1", "--db", str(old_db)], out=out, err=err, env={}) == 0, err.getvalue()
    assert "article-example" in out.getvalue() and "baseline" in out.getvalue()


def test_the_upgrade_gives_the_freed_space_back(old_db: Path):
    """0002 turns rows into chunks; the file is vacuumed afterwards, so it shrinks instead of keeping free pages."""
    before = old_db.stat().st_size
    Store(f"sqlite:///{old_db}").close()
    with sqlite3.connect(old_db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert free == 0 and old_db.stat().st_size < before
