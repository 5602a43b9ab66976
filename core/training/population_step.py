"""What a population's step leaves for its flush, computed at the step while the stacked rows are in cache: the
`Step` itself (logits, labels, losses and, with full diagnostics, the logits' gradient, each ReLU unit's batch
maximum and an entry of the update statistics' tracker), and each member's first non-finite step. Nothing else of
a step is kept: a flush (`PopulationWindow.fetch`) reads only these.

The update statistics are taken one of two ways (`tracker`):
- `AtStep` (the CPU's): reduced at each logged step while the rows are in cache (`StepStats`), each member's first
  non-finite step kept by `FirstBad`. A flush stacks (members, layers) columns.
- `InWindow` (a GPU's): each logged step's rows copied into the window's slots, three kernels a step, and reduced at
  the flush for every step at once. A step of these tiny models on a GPU is bound by its kernel launches (about 30
  a step at the step, 3 this way); the copies and the flush's reductions are the GPU's arithmetic, which it has to
  spare. A member's first non-finite step is read from its slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(slots=True)
class Step:
    z: torch.Tensor  # (members, batch) logits
    y: torch.Tensor  # (members, batch) labels
    loss: torch.Tensor  # (members,)
    meta: tuple[int, int, float]  # step, epoch, wall time
    logged: bool
    # (z_grad, each ReLU layer's batch maxima, the tracker's entry), each with the members first
    full: tuple | None


class StepStats:
    """A logged step's update statistics for every member, (5, members, layers), from its (members, n)
    gradients (as computed, before clipping) and values before and after the step. Per layer of the stacked
    row (`layer_ranges`): the sums of squares of the gradient, of the values after and of the change (as
    `layer_squares`), then the counts of the elements whose gradient is not zero and, of those, whose value did
    not change. Taken at the step, on tensors of one row per member that are still in cache, so that a flush
    stacks only these; a member's own layers add up to what `GradLayout.norms` and `updates` give its single run
    (the counts exactly: float32 holds them up to 2**24 elements a layer).

    Its buffers, and their views, are made once and reused at every step: a step's work is a dozen operations
    on them, and making a view costs about as much as an operation on a row this small. `before(values)` keeps
    the values before the step in one of them (the trainer reads them until the next step)."""

    def __init__(self, layer_ranges: dict[str, list[tuple[int, int]]]) -> None:
        self.layer_ranges = layer_ranges
        self._made: tuple | None = None  # (shape, dtype, device) of the rows the buffers were made for

    def _make(self, rows: torch.Tensor) -> None:
        made = (rows.shape, rows.dtype, rows.device)
        if made == self._made:
            return
        wide = torch.float64 if rows.dtype == torch.float64 else torch.float32  # as `layer_squares`
        self.x = torch.empty((5, *rows.shape), dtype=wide, device=rows.device)  # one buffer: ten operations
        self.parts = self.x.unbind(0)
        self.squares = self.x[:2]
        self.layers = [[self.x[..., a:b] for a, b in spans] for spans in self.layer_ranges.values()]
        self.prior = torch.empty_like(rows)
        self._made = made

    def before(self, values: torch.Tensor) -> torch.Tensor:
        """A copy of the values before the step, valid until the next call."""
        self._make(values)
        return self.prior.copy_(values)

    def __call__(self, grads: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        self._make(grads)
        squared_g, squared_a, change, live, stuck = self.parts
        torch.sub(after, before, out=change)  # the change, in the compute dtype as the single run's
        torch.eq(change, 0, out=stuck)
        torch.ne(grads, 0, out=live)
        stuck.mul_(live)  # stuck: unchanged and live
        change.square_()
        if grads.dtype == self.x.dtype:  # squared as they are: one pass each
            torch.mul(grads, grads, out=squared_g)
            torch.mul(after, after, out=squared_a)
        else:  # widened before squaring, as `layer_squares` does
            squared_g.copy_(grads)
            squared_a.copy_(after)
            self.squares.square_()
        # per layer of the row (the counts are sums of ones: exact in float32 up to 2**24 elements a layer)
        sums = []
        for cuts in self.layers:
            parts = [cut.sum(dim=-1) for cut in cuts]
            sums.append(sum(parts[1:], parts[0]))
        return torch.stack(sums, dim=-1)


# Under this, every member's float32 sum of its layers' squares is finite however it rounds (float32's largest
# value is 3.4e38), and so is its root: the flush's gradient norm. The squares are summed in float64 to compare.
_CLEAR = 1e38


class FirstBad:
    """Each member's first logged step with a non-finite logit, loss or gradient norm, judged as a flush judges it
    (`PopulationWindow.fetch`), with its gradients and its values before and after that step: what
    `where_nonfinite` reads when the member is stopped. Kept at each logged step, in place of every step's copies
    until the flush (which held a 200-member population's window to about 230 steps and most of a gigabyte).
    On a GPU the flags stay on the device and the copy is a `where` on every row: no host sync a step. On the CPU
    (`on_host`), where reading a tensor costs nothing, the flags are numpy's (a tenth of the time of torch's small
    operations) and only the rows of members that went bad are copied."""

    def __init__(self, size: int, device: torch.device, *, on_host: bool | None = None) -> None:
        self.on_host = device.type == "cpu" if on_host is None else on_host
        if self.on_host:
            self.caught: torch.Tensor | np.ndarray = np.zeros(size, dtype=bool)
            self.at: torch.Tensor | np.ndarray = np.full(size, -1, dtype=np.int64)  # the caught step's number
        else:
            self.caught = torch.zeros(size, dtype=torch.bool, device=device)
            self.at = torch.full((size,), -1, dtype=torch.long, device=device)
        self.kept: list[torch.Tensor] | None = None  # gradients, before, after: (members, n) each, once needed

    def offer(self, step: int, z: torch.Tensor, loss: torch.Tensor, stats: torch.Tensor, grads: torch.Tensor,
              before: torch.Tensor, after: torch.Tensor) -> None:
        """Step number `step`'s logits (members, batch), losses, `StepStats`, gradients (before clipping) and
        values before and after it."""
        if self.on_host:
            squares, logits, losses = _host(stats)[0], _host(z), _host(loss)  # indexed in numpy: no torch view
            if squares.dtype == np.float32 and losses.dtype == np.float32 \
                    and np.isfinite(logits).all() and np.isfinite(losses).all() \
                    and float(squares.sum(dtype=np.float64)) < _CLEAR:
                return  # the usual step, float32 or narrower: no warning to silence, no member to judge
            with np.errstate(over="ignore", invalid="ignore"):
                # A sum is finite only if every term is, and no member's squares add up to more than all of them:
                # when the logits' sum, the float32 root of every square's sum and the float32 losses are finite,
                # no member went bad (an overflowing sum of finite values only sends the step to the check below)
                root = math.sqrt(float(squares.sum()))
                if math.isfinite(float(logits.sum())) and np.isfinite(np.float32(root)) \
                        and np.isfinite(losses.astype(np.float32)).all():
                    return
                norm = np.sqrt(squares.sum(axis=-1)).astype(np.float32)  # as the flush's grad_norm
                ok = np.isfinite(logits).all(axis=1) & np.isfinite(losses.astype(np.float32)) & np.isfinite(norm)
            new = ~ok & ~self.caught
            if not new.any():
                return
            rows = torch.from_numpy(np.flatnonzero(new))
            self._keep(lambda kept, now: kept.index_copy_(0, rows, now[rows]), grads, before, after)
            self.at[new] = step
            self.caught |= new
            return
        new = _newly_bad(z, loss, stats, self.caught)
        rows = new[:, None]
        self._keep(lambda kept, now: torch.where(rows, now, kept, out=kept), grads, before, after)
        self.at.masked_fill_(new, step)
        self.caught |= new

    def _keep(self, copy: Callable[[torch.Tensor, torch.Tensor], object], *now: torch.Tensor) -> None:
        if self.kept is None:
            self.kept = [torch.zeros_like(t) for t in now]
        for kept, t in zip(self.kept, now):
            copy(kept, t)

    def caught_at(self) -> list[int]:
        """Each member's caught step number (-1: none), on the host (a flush reads it once)."""
        return self.at.tolist()


def _newly_bad(z: torch.Tensor, loss: torch.Tensor, stats: torch.Tensor, caught: torch.Tensor) -> torch.Tensor:
    """The members (a bool a member, on the device) not `caught` yet whose step has a non-finite logit, float32
    loss or float32 gradient norm, in 10 kernels (`isfinite` is 4 each; a GPU step is launch-bound): a value
    times 0 is 0 when it is finite, NaN when not, and a sum of such terms is NaN if any is, else 0 (each is made 0
    before adding: two finite values can add up to an infinity)."""
    norm = stats[0].sum(dim=-1).sqrt().float()  # a member's layers (the others' squares are 0)
    zeros = z.detach().mul(0).sum(dim=1)  # NaN for a row with a NaN or an infinity, else 0
    zeros = zeros + loss.detach().float().mul(0) + norm.mul_(0)
    return zeros.ne(0) > caught  # NaN != 0; and not caught before (bool: True > False)


def _host(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor's values as numpy's, without a copy (bfloat16, which numpy lacks, widened: exactly)."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


# ---------------------------------------------------------------------- the update statistics' two trackers
ROWS_BYTES = 512 * 2**20  # the logged steps' rows `InWindow` keeps for a flush (on the device) at most ...
MIN_SLOTS = 16  # ... in room for at least this many steps; else the statistics are taken at each step
IN_WINDOW: bool | None = None  # None: `InWindow` off the CPU; tests and benchmarks set it to choose


class AtStep:
    """The update statistics reduced at each logged step (`StepStats`), and each member's first non-finite logged
    step kept by `FirstBad`: an entry is the step's (5, members, layers) statistics."""

    slots = None  # no bound on a window's steps

    def __init__(self, layer_ranges: dict[str, list[tuple[int, int]]], size: int, device: torch.device, *,
                 on_host: bool | None = None) -> None:
        self.stats = StepStats(layer_ranges)
        self.first_bad = FirstBad(size, device, on_host=on_host)

    def grads(self, grads: torch.Tensor, clipped: bool) -> torch.Tensor:
        """The gradients as computed (a copy when they are about to be clipped in place)."""
        return grads.clone() if clipped else grads

    def before(self, values: torch.Tensor) -> torch.Tensor:
        return self.stats.before(values)

    def after(self, step: int, z: torch.Tensor, loss: torch.Tensor, grads: torch.Tensor, before: torch.Tensor,
              after: torch.Tensor) -> torch.Tensor:
        stats = self.stats(grads, before, after)
        self.first_bad.offer(step, z, loss, stats, grads, before, after)
        return stats

    def collect(self, entries: list[torch.Tensor]) -> torch.Tensor:
        """The window's logged steps' statistics, (5, steps, members, layers)."""
        return torch.stack(entries, dim=1)

    def reset(self) -> None:
        """A flush took the window's steps (their entries stay readable until the next step)."""

    def keeper(self) -> Callable[[int, int, object], list[torch.Tensor] | None]:
        """(member k, step number, the step's entry) -> that step's (members, n) gradients, values before and after,
        if they were kept for k (its first non-finite step, judged as a flush judges)."""
        caught = self.first_bad.caught_at()
        return lambda k, step, entry: self.first_bad.kept if caught[k] == step else None


class InWindow:
    """Each logged step's gradients (as computed), values before and after, copied into the next of at most
    `slots` (3 kernels a step); the flush reduces every step's at once (`StepStats` over blocks of steps) and reads
    a member's first non-finite step from its slot. An entry is the step's slot. The slots are made as the first
    window needs them, doubling from FIRST_SLOTS: a window the clock flushes early holds no more than it used."""

    BLOCK = 2**22  # elements a (steps, members, n) block of the flush's reduction holds at most
    FIRST_SLOTS = 16

    def __init__(self, layer_ranges: dict[str, list[tuple[int, int]]], slots: int) -> None:
        self.stats = StepStats(layer_ranges)
        self.slots = slots
        self.used = 0
        self.rows: torch.Tensor | None = None  # (3, slots made, members, n)
        self.views: list[tuple[torch.Tensor, ...]] = []  # each slot's three (members, n) rows, made once

    def grads(self, grads: torch.Tensor, clipped: bool) -> torch.Tensor:
        if self.used == len(self.views):
            self._grow(grads)
        return self.views[self.used][0].copy_(grads)

    def _grow(self, like: torch.Tensor) -> None:
        made = len(self.views)
        if made == self.slots:
            raise RuntimeError(f"the window holds {self.slots} logged steps' rows: flush before the next")
        rows = like.new_empty((3, min(self.slots, max(self.FIRST_SLOTS, 2 * made)), *like.shape))
        if self.rows is not None:
            rows[:, :made].copy_(self.rows)
        self.rows = rows
        self.views = list(zip(*(part.unbind(0) for part in rows.unbind(0))))

    def before(self, values: torch.Tensor) -> torch.Tensor:
        return self.views[self.used][1].copy_(values)

    def after(self, step: int, z: torch.Tensor, loss: torch.Tensor, grads: torch.Tensor, before: torch.Tensor,
              after: torch.Tensor) -> int:
        self.views[self.used][2].copy_(after)
        self.used += 1
        return self.used - 1

    def collect(self, entries: list[int]) -> torch.Tensor:
        first, n = entries[0], len(entries)
        if entries != list(range(first, first + n)):
            raise ValueError("a window's logged steps fill consecutive slots")
        per_step = self.rows[0, 0].numel()
        block = max(1, self.BLOCK // per_step)
        parts = [self.stats(*self.rows[:, a:min(a + block, first + n)].unbind(0))
                 for a in range(first, first + n, block)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def reset(self) -> None:
        self.used = 0

    def keeper(self) -> Callable[[int, int, object], list[torch.Tensor] | None]:
        return lambda k, step, entry: list(self.views[entry])


def tracker(layer_ranges: dict[str, list[tuple[int, int]]], size: int, row: torch.Tensor) -> AtStep | InWindow:
    """The update statistics' tracker for a population whose stacked rows are like `row` (members, n): `InWindow`
    off the CPU (or as `IN_WINDOW` says) when at least MIN_SLOTS steps' rows fit in ROWS_BYTES, else `AtStep`."""
    slots = ROWS_BYTES // (3 * row.numel() * row.element_size())
    in_window = row.device.type != "cpu" if IN_WINDOW is None else IN_WINDOW
    if in_window and slots >= MIN_SLOTS:
        return InWindow(layer_ranges, slots)
    return AtStep(layer_ranges, size, row.device)
