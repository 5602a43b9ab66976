"""What leaves the store: plain frozen records of runs and studies, the run statuses, and the store's errors.

Never ORM rows: a `Run` is safe to keep, pickle and compare after its session is gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence


STATUSES: tuple[str, ...] = ("running", "finished", "diverged", "failed", "cancelled", "interrupted")


FINAL_STATUSES: tuple[str, ...] = STATUSES[1:]


INTERRUPTED_ERROR = "the training process stopped without finishing (killed or crashed)"


class RunNotFound(KeyError):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"no run with id {run_id}")
        self.run_id = run_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StudyNotFound(KeyError):
    def __init__(self, study_id: int) -> None:
        super().__init__(f"no study with id {study_id}")
        self.study_id = study_id

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, kw_only=True)
class Run:
    id: int
    name: str
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    device: str | None = None
    dtype: str | None = None
    torch_version: str | None = None
    wall_time_s: float | None = None
    pid: int | None = None
    host: str | None = None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    progress_step: int = 0
    total_steps: int | None = None
    notes: str = ""
    study_id: int | None = None
    tags: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float | None:
        if self.wall_time_s is not None:
            return self.wall_time_s
        end = self.finished_at or self.heartbeat_at
        if self.started_at is None or end is None:
            return None
        return (end - self.started_at).total_seconds()


@dataclass(frozen=True, kw_only=True)
class Study:
    id: int
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    created_at: datetime


def check_status(status: str, allowed: Sequence[str] = STATUSES) -> str:
    if status not in allowed:
        raise ValueError(f"status {status!r} is not one of {', '.join(allowed)}")
    return status


def db_reason(exc: BaseException) -> str:
    """A database error in one line: the first line of the driver's own message (SQLAlchemy's wraps it in the
    statement and a link), else the error's type."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def dumps_json(obj: Mapping[str, Any]) -> str:
    """A config or summary as stored: Python's json with NaN and Infinity allowed (floats round trip exactly)."""
    return json.dumps(obj, allow_nan=True, default=_json_default)


def loads_json(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _json_default(obj: Any) -> Any:
    if callable(getattr(obj, "item", None)):  # numpy scalars and 0-d tensors
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
