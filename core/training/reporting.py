"""The reporter interface: how training talks to the outside world without knowing about it.

The trainer calls these methods; the store provides one implementation (`core.store.StoreReporter`), the tests
another (`MemoryReporter`). Metric values arrive as plain Python floats (NaN and Inf included), in batches
(`MetricBatch`, columns of rows), so an implementation never sees a tensor and never needs to batch on its own
(a flush's blocks of rows come as numpy arrays to whoever asks for them: `MetricBatch.parts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, Iterable, Iterator, NamedTuple, Protocol

import numpy as np


class MetricRow(NamedTuple):
    key: str  # metric name, e.g. "train_loss" or "grad_norm/fc0"
    step: int  # optimizer steps taken when the value was measured (per-epoch metrics: the epoch's last step)
    epoch: int  # 0-based epoch the value belongs to
    value: float  # may be NaN or +-Inf
    wall_time: float  # seconds since the run started


class Block(NamedTuple):
    """Many metrics at the same points, as arrays: `values` is (len(keys), n), a row a key; `steps`, `epochs`
    (int64) and `wall_times` (float64) are (n,), sorted by step."""

    keys: list[str]
    values: np.ndarray
    steps: np.ndarray
    epochs: np.ndarray
    wall_times: np.ndarray


class MetricBatch:
    """Rows in columns: what one flush reports. Five lists instead of a tuple per value, so that the trainer fills
    them with list copies and the store reads them as they are; iterating gives `MetricRow`s.

    Rows may also come as `Block`s (`add_block`): many metrics at the same steps, as arrays, the form a flush
    computes them in. The store writes a block as it is (`core.store.metrics.chunk_records`: no Python number a
    value); the five lists, read by anyone else, take its rows, in the order they were added, the first time
    they are read."""

    __slots__ = ("_keys", "_steps", "_epochs", "_values", "_wall_times", "_blocks")

    def __init__(self, keys: list[str] | None = None, steps: list[int] | None = None, epochs: list[int] | None = None,
                 values: list[float] | None = None, wall_times: list[float] | None = None) -> None:
        self._keys = [] if keys is None else keys
        self._steps = [] if steps is None else steps
        self._epochs = [] if epochs is None else epochs
        self._values = [] if values is None else values
        self._wall_times = [] if wall_times is None else wall_times
        self._blocks: list[Block] = []

    def _settle(self) -> MetricBatch:
        """The blocks' rows appended to the lists, in order (a row added after a block comes after its rows)."""
        blocks, self._blocks = self._blocks, []
        for b in blocks:
            self._append(b.keys, b.values.tolist(), b.steps.tolist(), b.epochs.tolist(), b.wall_times.tolist())
        return self

    def _append(self, keys: list[str], rows: Iterable[list[float]], steps: list[int], epochs: list[int],
                wall_times: list[float]) -> None:
        """Rows of many metrics at the same steps, `rows[i]` the values of `keys[i]`, onto the lists."""
        rows = list(rows)
        self._keys.extend(chain.from_iterable(repeat(key, len(row)) for key, row in zip(keys, rows)))
        self._steps.extend(steps * len(keys))
        self._epochs.extend(epochs * len(keys))
        self._values.extend(chain.from_iterable(rows))
        self._wall_times.extend(wall_times * len(keys))

    keys = property(lambda self: self._settle()._keys)
    steps = property(lambda self: self._settle()._steps)
    epochs = property(lambda self: self._settle()._epochs)
    values = property(lambda self: self._settle()._values)
    wall_times = property(lambda self: self._settle()._wall_times)

    def parts(self) -> tuple[tuple[list[str], list[int], list[int], list[float], list[float]], list[Block]]:
        """The rows as they are held, without settling: the five lists, and the blocks added after them (rows
        added after a block have settled it: the lists then hold every row before the blocks)."""
        return (self._keys, self._steps, self._epochs, self._values, self._wall_times), list(self._blocks)

    @classmethod
    def from_rows(cls, rows: Iterable[MetricRow]) -> MetricBatch:
        columns = [list(c) for c in zip(*rows)]
        return cls(*columns) if columns else cls()

    def add_series(self, key: str, steps: list[int], epochs: list[int], values: list[float],
                   wall_times: list[float]) -> None:
        """One metric at many steps (the lists are of equal length)."""
        self._settle()
        self._keys.extend(repeat(key, len(values)))
        self._steps.extend(steps)
        self._epochs.extend(epochs)
        self._values.extend(values)
        self._wall_times.extend(wall_times)

    def add_columns(self, columns: dict[str, list[float]], steps: list[int], epochs: list[int],
                    wall_times: list[float]) -> None:
        """Many metrics at the same steps (every column as long as `steps`): `add_series` of each, in a handful of
        list operations instead of five a metric."""
        self._settle()._append(list(columns), columns.values(), steps, epochs, wall_times)

    def add_block(self, keys: list[str], values: np.ndarray, steps: Any, epochs: Any, wall_times: Any) -> None:
        """`add_columns` as arrays: `values` (len(keys), n) for the n `steps` (sorted), `epochs` and `wall_times`.
        Kept as they are (the arrays are not copied: the caller leaves them alone)."""
        values = np.asarray(values, dtype=np.float64)
        block = Block(list(keys), values, np.asarray(steps, dtype=np.int64), np.asarray(epochs, dtype=np.int64),
                      np.asarray(wall_times, dtype=np.float64))
        n = block.steps.size
        if values.shape != (len(block.keys), n) or block.epochs.shape != (n,) or block.wall_times.shape != (n,):
            raise ValueError(f"a block's values must be (keys, steps) = ({len(block.keys)}, {n}) and its epochs and "
                             f"wall times ({n},); got {values.shape}, {block.epochs.shape}, {block.wall_times.shape}")
        if n and block.keys:
            self._blocks.append(block)

    def add(self, key: str, step: int, epoch: int, value: float, wall_time: float) -> None:
        self._settle()
        self._keys.append(key)
        self._steps.append(step)
        self._epochs.append(epoch)
        self._values.append(value)
        self._wall_times.append(wall_time)

    def check(self) -> None:
        """Raise ValueError unless every column has the same length (zip would drop the extra rows)."""
        lengths = {f: len(getattr(self, "_" + f)) for f in ("keys", "steps", "epochs", "values", "wall_times")}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"a MetricBatch's columns must be of one length; got {lengths}")

    def __len__(self) -> int:
        return len(self._keys) + sum(b.values.size for b in self._blocks)

    def __iter__(self) -> Iterator[MetricRow]:
        return map(MetricRow._make, zip(self.keys, self.steps, self.epochs, self.values, self.wall_times))

    def __repr__(self) -> str:
        return f"MetricBatch({len(self)} rows)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetricBatch):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in ("keys", "steps", "epochs", "values", "wall_times"))

    def __getstate__(self) -> tuple:
        return self._settle()._keys, self._steps, self._epochs, self._values, self._wall_times

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state)


class StoreUnavailable(RuntimeError):
    """A reporter could not keep the run's values: its store refused the write (locked past its timeout, a full
    disk, a server gone). Not the run's fault: the trainer stops it as "interrupted", which a study reruns, not
    "failed", which a study keeps as a result."""


@dataclass(frozen=True)
class RunInfo:
    device: str  # "cpu", "cuda:0", ...
    dtype: str  # compute dtype, e.g. "float32"
    torch_version: str
    total_steps: int  # optimizer steps the run will take if nothing stops it


@dataclass(frozen=True)
class RunResult:
    status: str  # "finished", "diverged", "failed", "cancelled" or "interrupted" (`StoreUnavailable`)
    summary: dict[str, Any]  # final and best metrics; floats may be NaN
    error: str | None  # what went wrong, for diverged and failed runs
    wall_time_s: float


class Reporter(Protocol):
    def on_start(self, info: RunInfo) -> None: ...

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        """A batch of rows; `step` is the optimizer steps done so far (for progress). A class may also offer
        `on_metrics_many(reporters, batches, steps) -> list[bool]` (which it handled), for many of its reporters
        at once, which a population calls instead (`population.handled`; so too `on_start_many(reporters, info)`
        and `on_finish_many(reporters, results)`)."""

    def should_stop(self) -> bool:
        """Polled once per flush: True cancels the run (status "cancelled"). A class may also offer
        `should_stop_many(reporters) -> list[bool]`, the same for many of its reporters at once, which a
        population asks instead (`population.poll_stops`)."""

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
