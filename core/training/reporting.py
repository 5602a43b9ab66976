"""The reporter interface: how training talks to the outside world without knowing about it.

The trainer calls these methods; the store provides one implementation (`core.store.StoreReporter`), the tests
another (`MemoryReporter`). Metric values arrive as plain Python floats (NaN and Inf included), in batches
(`MetricBatch`, columns of rows), so an implementation never sees a tensor and never needs to batch on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, Iterable, Iterator, NamedTuple, Protocol


class MetricRow(NamedTuple):
    key: str  # metric name, e.g. "train_loss" or "grad_norm/fc0"
    step: int  # optimizer steps taken when the value was measured (per-epoch metrics: the epoch's last step)
    epoch: int  # 0-based epoch the value belongs to
    value: float  # may be NaN or +-Inf
    wall_time: float  # seconds since the run started


@dataclass(slots=True)
class MetricBatch:
    """Rows in columns: what one flush reports. Five lists instead of a tuple per value: the trainer fills them
    from its own columns with list copies, and the store hands them to one executemany as they are. Iterating
    gives `MetricRow`s."""

    keys: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: Iterable[MetricRow]) -> MetricBatch:
        columns = [list(c) for c in zip(*rows)]
        return cls(*columns) if columns else cls()

    def add_series(self, key: str, steps: list[int], epochs: list[int], values: list[float],
                   wall_times: list[float]) -> None:
        """One metric at many steps (the lists are of equal length)."""
        self.keys.extend(repeat(key, len(values)))
        self.steps.extend(steps)
        self.epochs.extend(epochs)
        self.values.extend(values)
        self.wall_times.extend(wall_times)

    def add_columns(self, columns: dict[str, list[float]], steps: list[int], epochs: list[int],
                    wall_times: list[float]) -> None:
        """Many metrics at the same steps (every column as long as `steps`): `add_series` of each, in a handful of
        list operations instead of five a metric."""
        self.keys.extend(chain.from_iterable(repeat(key, len(col)) for key, col in columns.items()))
        self.steps.extend(steps * len(columns))
        self.epochs.extend(epochs * len(columns))
        self.values.extend(chain.from_iterable(columns.values()))
        self.wall_times.extend(wall_times * len(columns))

    def add(self, key: str, step: int, epoch: int, value: float, wall_time: float) -> None:
        self.keys.append(key)
        self.steps.append(step)
        self.epochs.append(epoch)
        self.values.append(value)
        self.wall_times.append(wall_time)

    def check(self) -> None:
        """Raise ValueError unless every column has the same length (zip would drop the extra rows)."""
        lengths = {f: len(getattr(self, f)) for f in self.__slots__}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"a MetricBatch's columns must be of one length; got {lengths}")

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[MetricRow]:
        return map(MetricRow._make, zip(self.keys, self.steps, self.epochs, self.values, self.wall_times))


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

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        """A batch of rows; `step` is the optimizer steps done so far (for progress)."""

    def should_stop(self) -> bool:
        """Polled once per flush: True cancels the run (status "cancelled")."""

    def on_finish(self, result: RunResult) -> None: ...


@dataclass
class MemoryReporter:
    """Keeps everything in lists; for tests and for callers that want the series in memory."""

    info: RunInfo | None = None
    batches: list[MetricBatch] = field(default_factory=list)
    result: RunResult | None = None
    flushes: int = 0
    stop_after_flushes: int | None = None  # simulate a cancel request after this many flushes

    def on_start(self, info: RunInfo) -> None:
        self.info = info

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        self.batches.append(batch)
        self.flushes += 1

    def should_stop(self) -> bool:
        return self.stop_after_flushes is not None and self.flushes >= self.stop_after_flushes

    def on_finish(self, result: RunResult) -> None:
        self.result = result

    @property
    def rows(self) -> list[MetricRow]:
        return [row for batch in self.batches for row in batch]

    def series(self, key: str) -> list[float]:
        return [v for b in self.batches for k, v in zip(b.keys, b.values) if k == key]

    def keys(self) -> set[str]:
        return {k for b in self.batches for k in b.keys}
