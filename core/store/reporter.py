"""`StoreReporter`: the trainer's `Reporter` (core.training.reporting) writing into a `Store`."""

from __future__ import annotations

from core.store.records import RunNotFound
from core.store.sqlstore import Store
from core.training.reporting import MetricBatch, RunInfo, RunResult


class StoreReporter:
    """The trainer's Reporter, writing into a store. Every call is one commit, so a killed trainer keeps every
    batch it handed over. A run deleted while it trains stops it: `should_stop` turns True and later writes
    are dropped instead of failing the trainer."""

    def __init__(self, store: Store, run_id: int, *, pid: int | None = None, host: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.pid = pid
        self.host = host
        self.deleted = False

    def on_start(self, info: RunInfo) -> None:
        self.store.start_run(self.run_id, device=info.device, dtype=info.dtype, torch_version=info.torch_version,
                             total_steps=info.total_steps, pid=self.pid, host=self.host)

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        if self.deleted:
            return
        try:
            self.store.log_metrics(self.run_id, batch, progress_step=step)
        except RunNotFound:
            self.deleted = True

    def should_stop(self) -> bool:
        if self.deleted:
            return True
        try:
            return self.store.is_cancel_requested(self.run_id)
        except RunNotFound:
            self.deleted = True
            return True

    def on_finish(self, result: RunResult) -> None:
        if self.deleted:
            return
        try:
            self.store.finish_run(self.run_id, status=result.status, summary=result.summary, error=result.error,
                                  wall_time_s=result.wall_time_s)
        except RunNotFound:
            self.deleted = True
