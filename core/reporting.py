"""The reporter interface: how training talks to the outside world without knowing about it.

The trainer calls these methods; the store provides one implementation (`core.store.StoreReporter`), the tests
another (`MemoryReporter`). Metric values arrive as plain Python floats (NaN and Inf included), in batches, so an
implementation never sees a tensor and never needs to batch on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, Sequence


class MetricRow(NamedTuple):
    key: str  # metric name, e.g. "train_loss" or "grad_norm/fc0"
    step: int  # optimizer steps taken when the value was measured (per-epoch metrics: the epoch's last step)
    epoch: int  # 0-based epoch the value belongs to
    value: float  # may be NaN or +-Inf
    wall_time: float  # seconds since the run started


@dataclass(frozen=True)
class RunInfo:
    device: str  # "cpu", "cuda:0", ...
    dtype: str  # compute dtype, e.g. "float32"
    torch_version: str
    total_steps: int  # optimizer steps the run will take if nothing stops it


@dataclass(frozen=True)
class RunResult:
    status: str  # "finished", "diverged", "failed" or "cancelled"
    summary: dict[str, Any]  # final and best metrics; floats may be NaN
    error: str | None  # what went wrong, for diverged and failed runs
    wall_time_s: float


class Reporter(Protocol):
    def on_start(self, info: RunInfo) -> None: ...

    def on_metrics(self, rows: Sequence[MetricRow], *, step: int) -> None:
        """A batch of rows; `step` is the optimizer steps done so far (for progress)."""

    def should_stop(self) -> bool:
        """Polled once per flush: True cancels the run (status "cancelled")."""

    def on_finish(self, result: RunResult) -> None: ...


@dataclass
class MemoryReporter:
    """Keeps everything in lists; for tests and for callers that want the series in memory."""

    info: RunInfo | None = None
    rows: list[MetricRow] = field(default_factory=list)
    result: RunResult | None = None
    flushes: int = 0
    stop_after_flushes: int | None = None  # simulate a cancel request after this many flushes

    def on_start(self, info: RunInfo) -> None:
        self.info = info

    def on_metrics(self, rows: Sequence[MetricRow], *, step: int) -> None:
        self.rows.extend(rows)
        self.flushes += 1

    def should_stop(self) -> bool:
        return self.stop_after_flushes is not None and self.flushes >= self.stop_after_flushes

    def on_finish(self, result: RunResult) -> None:
        self.result = result

    def series(self, key: str) -> list[float]:
        return [r.value for r in self.rows if r.key == key]

    def keys(self) -> set[str]:
        return {r.key for r in self.rows}
