"""Training in the background: the dashboard's way to start, cancel and keep track of runs.

A run is trained by `python -m core train --run-id N` in its own process and session (not a thread of the
Streamlit server, not tied to a browser tab), so closing the tab or restarting the app does not stop it. A run
whose process died without finishing is marked `interrupted` by `refresh`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from core import PROJECT_ROOT
from core.config import ExperimentConfig
from core.store import Store, pid_alive


def default_log_dir() -> Path:
    return Path(tempfile.gettempdir()) / "lossboard" / "logs"


def launch(store: Store, cfg: ExperimentConfig, *, name: str | None = None, log_dir: Path | None = None,
           python: str = sys.executable, study_id: int | None = None) -> int:
    """Create the run, start its training process and return the run id at once."""
    from core.cli import describe  # noqa: PLC0415 - cli imports the store; keep the import graph one-way

    cfg.validate()
    run_id = store.create_run(name=name or describe(cfg), config=cfg.to_dict(), study_id=study_id)
    log_dir = log_dir or default_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    config_path = log_dir / f"run-{run_id}.json"
    config_path.write_text(json.dumps(cfg.to_dict()))
    with open(log_dir / f"run-{run_id}.log", "ab") as log:
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
