"""Training in the background: the dashboard's way to start, cancel and keep track of runs.

A run is trained by `python -m core train --run-id N` in its own process and session (not a thread of the
Streamlit server, not tied to a browser tab), so closing the tab or restarting the app does not stop it. A run
whose process died without finishing is marked `interrupted` by `refresh`.

A study is scheduled the same way: `launch_study` stores it and starts `python -m core study --study=NAME` in
its own process and session, which trains its runs in worker processes of its own; `relaunch_study` resumes it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import PROJECT_ROOT
from core.experiment.config import ExperimentConfig
from core.store import Store, pid_alive

if TYPE_CHECKING:
    from core.jobs.spec import StudySpec


def default_log_dir() -> Path:
    return Path(tempfile.gettempdir()) / "lossboard" / "logs"


def launch(store: Store, cfg: ExperimentConfig, *, name: str | None = None, log_dir: Path | None = None,
           python: str = sys.executable, study_id: int | None = None) -> int:
    """Create the run, start its training process and return the run id at once."""
    from core.experiment.config import describe  # noqa: PLC0415 - cli imports the store; keep the import graph one-way

    cfg.validate()
    run_id = store.create_run(name=name or describe(cfg), config=cfg.to_dict(), study_id=study_id)
    log_dir = log_dir or default_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    config_path = log_dir / f"run-{run_id}.json"
    config_path.write_text(json.dumps(cfg.to_dict()))
    with open(log_path(run_id, log_dir), "ab") as log:
        proc = subprocess.Popen(
            [python, "-m", "core", "--db", store.url, "train", "--config", str(config_path), "--run-id", str(run_id),
             "--json"],
            cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    store.attach_process(run_id, pid=proc.pid, host=socket.gethostname())
    return run_id


def cancel(store: Store, run_id: int) -> None:
    """Ask a running run to stop; its trainer sees the request at its next flush (about a second)."""
    store.request_cancel(run_id)


def refresh(store: Store) -> list[int]:
    """Mark runs whose training process is gone as interrupted; returns their ids."""
    return store.mark_interrupted(host=socket.gethostname(), pid_alive=pid_alive)


def log_path(run_id: int, log_dir: Path | None = None) -> Path:
    return (log_dir or default_log_dir()) / f"run-{run_id}.log"


# ---------------------------------------------------------------------- studies
# The scheduler processes this server started, by (database URL, study id): to tell whether a study is still
# being scheduled (its runs are created one at a time, so between two of them none may be running) and to stop
# one that is still starting up. Popen, not a pid, so an exited process is never mistaken for a new one.
_study_processes: dict[tuple[str, int], subprocess.Popen] = {}


def launch_study(store: Store, spec: StudySpec, *, workers: int | None = None, log_dir: Path | None = None,
                 python: str = sys.executable, executor: str | None = None) -> int:
    """Store the study (or find the stored one of that name and grid), start its scheduler,
    `python -m core study --study=NAME`, in a process and session of its own, and return the study id at once.

    A study that a scheduler of this server is still running is not started twice. Bad input raises a
    ConfigError naming the field before anything is stored or started: a name already taken by another grid, a
    CSV that does not load, a device that is absent."""
    from core.jobs.studies import check_runnable, open_study  # noqa: PLC0415 - studies imports the store and effects

    check_runnable(spec)
    study_id = open_study(store, spec)
    if not study_running(store, study_id):  # a second would find every cell taken (`scheduler.take_slots`)
        _start_study(store, study_id, spec.name, workers=workers, log_dir=log_dir, python=python, executor=executor)
    return study_id


def relaunch_study(store: Store, study_id: int, *, workers: int | None = None, log_dir: Path | None = None,
                   python: str = sys.executable, executor: str | None = None) -> bool:
    """Resume a stored study in the background: its scheduler keeps the runs that have a result and trains the
    rest. Returns False (and starts nothing) while a scheduler this server started for it is still running."""
    if study_running(store, study_id):
        return False
    _start_study(store, study_id, store.get_study(study_id).name, workers=workers, log_dir=log_dir, python=python,
                 executor=executor)
    return True


def study_running(store: Store, study_id: int) -> bool:
    """Whether a scheduler this server started for the study is still running (False for one started from the
    command line or by an earlier server: its runs tell)."""
    proc = _study_processes.get((store.url, study_id))
    if proc is None:
        return False
    if proc.poll() is None:
        return True
    del _study_processes[(store.url, study_id)]
    return False


def cancel_study(store: Store, study_id: int) -> list[int]:
    """Cancel the study: its running runs stop at their next flush and its scheduler starts no more runs (see
    `core.studies.cancel_study`). A scheduler this server started gets SIGTERM too, which it takes as the same
    request, so one that has not created its first run yet stops as well. Returns the ids of the runs that were
    running."""
    from core.jobs.studies import cancel_study as cancel_runs  # noqa: PLC0415

    running = cancel_runs(store, study_id)
    proc = _study_processes.get((store.url, study_id))
    if proc is not None and proc.poll() is None:
        proc.terminate()
    return running


def wait_study(store: Store, study_id: int, timeout: float | None = None) -> int | None:
    """Wait for the scheduler this server started for the study; its exit code (None if there is none here).
    For tests and scripts: the dashboard never waits."""
    proc = _study_processes.get((store.url, study_id))
    return None if proc is None else proc.wait(timeout)


def study_log_path(study_id: int, log_dir: Path | None = None) -> Path:
    return (log_dir or default_log_dir()) / f"study-{study_id}.log"


def study_command(store: Store, name: str, *, workers: int | None = None,
                  python: str = sys.executable, executor: str | None = None) -> list[str]:
    """The command line of a study's scheduler; `--study=NAME` resumes the stored study of that name. With
    `executor="dask"` the scheduler's address comes from the environment (LOSSBOARD_DASK_SCHEDULER)."""
    return [python, "-m", "core", "--db", store.url, "study", f"--study={name}",
            *([f"--workers={int(workers)}"] if workers is not None else []),
            *([f"--executor={executor}"] if executor else [])]


def _start_study(store: Store, study_id: int, name: str, *, workers: int | None, log_dir: Path | None,
                 python: str, executor: str | None = None) -> None:
    log_dir = log_dir or default_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(study_log_path(study_id, log_dir), "ab") as log:
        proc = subprocess.Popen(study_command(store, name, workers=workers, python=python, executor=executor),
                                cwd=PROJECT_ROOT,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    _study_processes[(store.url, study_id)] = proc


# ---------------------------------------------------------------------- proving a fix
# `python -m core fix RUN_ID --json` processes this server started, by (database URL, run id), and where each
# writes its verdict.
_fix_processes: dict[tuple[str, int], tuple[subprocess.Popen, Path]] = {}


@dataclass(frozen=True)
class FixState:
    """Where proving a run's fix stands: "running", "done" (with the verdict, as `fix --json` prints it) or
    "failed" (with the log's last line); None from `fix_state` when none was started here."""

    status: str
    verdict: dict[str, Any] | None = None
    error: str | None = None


def launch_fix(store: Store, run_id: int, *, seeds: int = 3, log_dir: Path | None = None,
               python: str = sys.executable) -> None:
    """Start `python -m core fix RUN_ID --seeds N --json` in a process and session of its own (the dashboard never
    trains in its own process); its runs are stored as they train, tagged fix:RUN_ID. One at a time per run."""
    from core.jobs.fixes import proposed_fix  # noqa: PLC0415 - a run without a fix is refused here

    proposed_fix(store, run_id)
    state = fix_state(store, run_id)
    if state is not None and state.status == "running":
        return
    log_dir = log_dir or default_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    result = log_dir / f"fix-{run_id}.json"
    with open(result, "wb") as out, open(log_dir / f"fix-{run_id}.log", "ab") as log:
        proc = subprocess.Popen([python, "-m", "core", "--db", store.url, "fix", str(run_id), "--seeds", str(seeds),
                                 "--json"], cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                                start_new_session=True)
    _fix_processes[(store.url, run_id)] = (proc, result)


def fix_state(store: Store, run_id: int) -> FixState | None:
    """How the fix this server started for the run is doing; None when it started none, or when a run its
    verdict rests on has been deleted since (the verdict is withdrawn, and the fix can be proved again)."""
    found = _fix_processes.get((store.url, run_id))
    if found is None:
        return None
    proc, result = found
    if proc.poll() is None:
        return FixState("running")
    try:
        verdict = json.loads(result.read_text())
    except (OSError, ValueError):
        log = result.with_suffix(".log")
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        return FixState("failed", error=lines[-1] if lines else f"exit code {proc.returncode}")
    ids = [int(i) for side in verdict.get("run_ids", {}).values() for i in side]
    if len(store.get_runs(ids)) < len(ids):
        del _fix_processes[(store.url, run_id)]
        return None
    return FixState("done", verdict=verdict)


def wait_fix(store: Store, run_id: int, timeout: float | None = None) -> int | None:
    """Wait for the fix process of the run; its exit code (None if none was started here). For tests."""
    found = _fix_processes.get((store.url, run_id))
    return None if found is None else found[0].wait(timeout)
