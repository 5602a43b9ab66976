"""Shared fixtures: temporary run stores, empty or holding a few tiny real runs trained on the CPU."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.experiment.config import preset
from core.store import Store

# name -> (preset, overrides): three different configs, a second seed of one, all a couple of epochs.
TINY_RUNS: dict[str, tuple[str, dict]] = {
    "article-example": ("article-example", {"epochs": 2}),
    "article-fixed": ("article-fixed", {"epochs": 2, "n_samples": 200}),
    "mlp-bn-logits": ("mlp-bn-logits", {"epochs": 2, "n_samples": 200, "hidden": (8,)}),
    "mlp-bn-logits seed 1": ("mlp-bn-logits", {"epochs": 2, "n_samples": 200, "hidden": (8,), "seed": 1}),
}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def train_tiny_runs(store: Store) -> list[int]:
    """Train `TINY_RUNS` in this process (a second or two in all) and return their ids, oldest first."""
    from core.store import StoreReporter  # noqa: PLC0415 - torch only for the tests that need runs
    from core.training.trainer import train

    ids = []
    for name, (preset_name, overrides) in TINY_RUNS.items():
        cfg = preset(preset_name).replace(**overrides)
        run_id = store.create_run(name=name, config=cfg.to_dict())
        train(cfg, StoreReporter(store, run_id))
        ids.append(run_id)
    return ids


@pytest.fixture(scope="session")
def populated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file with the tiny runs, trained once per test session; tests get copies of it."""
    path = tmp_path_factory.mktemp("template") / "runs.db"
    with Store(sqlite_url(path)) as store:
        ids = train_tiny_runs(store)
        store.add_tag(ids[0], "article")
        store.add_tag(ids[1], "article")
        store.set_notes(ids[1], "the fix: raw logits into BCEWithLogitsLoss")
    return path


@pytest.fixture
def empty_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A URL of a fresh database, also set as LOSSBOARD_DB (what the dashboard opens)."""
    url = sqlite_url(tmp_path / "empty.db")
    monkeypatch.setenv("LOSSBOARD_DB", url)
    return url


@pytest.fixture
def populated_url(populated_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A URL of a private copy of the populated database, also set as LOSSBOARD_DB."""
    path = tmp_path / "runs.db"
    with sqlite3.connect(populated_template) as src, sqlite3.connect(path) as dst:
        src.backup(dst)  # a consistent copy, whatever is still in the WAL
    url = sqlite_url(path)
    monkeypatch.setenv("LOSSBOARD_DB", url)
    return url


@pytest.fixture
def populated_store(populated_url: str):
    with Store(populated_url) as store:
        yield store


@pytest.fixture(autouse=True, scope="session")
def never_the_users_database(tmp_path_factory: pytest.TempPathFactory):
    """Whatever a test forgets to set, the project's own experiments.db is never opened: LOSSBOARD_DB points at a
    scratch database for the whole session (fixtures above override it per test)."""
    import os

    scratch = sqlite_url(tmp_path_factory.mktemp("default-db") / "experiments.db")
    before = os.environ.get("LOSSBOARD_DB")
    os.environ["LOSSBOARD_DB"] = scratch
    yield
    if before is None:
        os.environ.pop("LOSSBOARD_DB", None)
    else:
        os.environ["LOSSBOARD_DB"] = before


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the session (tests/pg.py); skipped, with the reason, where none can run."""
    from pg import PgServer, why_not  # noqa: PLC0415 - tests/ is on sys.path (rootdir conftest)

    reason = why_not()
    if reason is not None:
        print(f"\nPostgreSQL tests skipped: {reason}")
        pytest.skip(reason)
    server = PgServer()
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a fresh, empty PostgreSQL database on the session's server."""
    return pg_server.database()
