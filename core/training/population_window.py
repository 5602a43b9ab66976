"""A population's measurement window: the trainer's `Window`, for every member at once.

`trainer.Window.fetch` computes a run's per-step diagnostics for a whole window of steps in a few vectorised
operations; this computes them for a whole window of steps *and members*, with the same functions
(`row_output_diagnostics`, `norms_from_squares` and `updates_from_squares` as in `GradLayout.norms` and
`updates`, `dead_frac_from_max`, `BatchNormSnapshot.stats`, `roc_auc_rows`, `ece_rows`, `reliability`), called once
per group of members that share a loss (its kind, clamp eps and pos_weight) or a parameter layout (BatchNorm on or
off), and brings everything to the host in one transfer.
The update statistics (per-layer sums of squares of gradients, values and changes; stuck updates) are taken by the
trainer's tracker (`population_step.tracker`): on the CPU reduced at each logged step, while one row per member is
in cache, so that a flush stacks (members, layers) columns, not every parameter of every step; on a GPU reduced
here from the window's slots of copied rows, all the window's steps at once. Either way `tracker.collect` gives the
same (5, steps, members, layers) table.
What it hands each member is the `Fetched` its own `Window` would have: the same rows, the same columns for its
`Summary`, the same first non-finite step; and it adds those columns to the members' summaries itself, every member
without a non-finite step in one `Summary.add_many` over the (members, steps) tables as they came back, not one
`add_columns` a member (a flush's per-member Python was most of a 200-member population's diagnostics cost).
tests/test_population.py compares every key, step and value with the single-run trainer, so a measurement added
to `Window` and not here fails there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.experiment.config import ExperimentConfig
from core.experiment.losses import logits_loss, loss_fn
from core.training.diagnostics import (BatchNormSnapshot, GradLayout, dead_frac_from_max, exact_dtype,
                                       norms_from_squares, row_output_diagnostics, updates_from_squares)
from core.training.population_step import AtStep, InWindow, Step
from core.training.reporting import MetricBatch
from core.training.scores import ece_rows, reliability, reliability_rows, roc_auc_rows
from core.training.summary import Summary
from core.training.window import Fetched, LoggedStep


STACK_ROWS = 12_800  # rows (a member's step each) that one stack of a window's steps holds at most


@dataclass(slots=True)
class End:
    epoch: int
    step: int
    wall: float
    val_z: torch.Tensor  # (members, n_val)
    bn: torch.Tensor | None  # (members, n) BatchNorm running statistics
    offset: int  # training samples buffered before this epoch's end
    at_step: int  # ... and steps


class PopulationWindow:
    def __init__(self, cfgs: list[ExperimentConfig], layouts: list[GradLayout], snapshots: list[BatchNormSnapshot],
                 own: list[torch.Tensor | None], relu: list[bool], *, layer_ranges: dict[str, list[tuple[int, int]]],
                 output_relu: list[bool], y_val: torch.Tensor) -> None:
        self.size = len(cfgs)
        self.lrs = [c.lr for c in cfgs]
        self.own = own
        self.y_val = y_val
        self.y_val_host = y_val.float().cpu().numpy()
        self.tracker: AtStep | InWindow | None = None  # the update statistics' (`population_step.tracker`): set by
        # the trainer when it takes full diagnostics
        dev = y_val.device

        def grouped(key: Callable[[int], object]) -> list[tuple[int, torch.Tensor]]:
            """(first member, members) of each group of equal `key`."""
            groups: dict[object, list[int]] = {}
            for k in range(self.size):
                groups.setdefault(key(k), []).append(k)
            return [(ks[0], torch.tensor(ks, device=dev)) for ks in groups.values()]

        self.losses = [(cfgs[k], idx) for k, idx in grouped(lambda k: (cfgs[k].loss, cfgs[k].clamp_eps,
                                                                        cfgs[k].pos_weight))]
        # the stacked row's layers (`StackedClassifier.layer_ranges`), and each member layout's layers among them
        self.layer_ranges = layer_ranges
        names = list(layer_ranges)
        self.layouts = [(layouts[k], idx, [names.index(name) for name in layouts[k].ranges])
                        for k, idx in grouped(lambda k: repr(layouts[k].ranges))]
        # members with a ReLU: `dead_relu_frac` of their hidden ReLU layers (`relu`) and output ReLU
        self.dead = [(relu[k], output_relu[k], idx) for k, idx in grouped(lambda k: (relu[k], output_relu[k]))
                     if relu[k] or output_relu[k]]
        self.bn = [(snapshots[k], idx) for k, idx in grouped(lambda k: tuple(snapshots[k].keys)) if snapshots[k].keys]
        self.epoch_keys = [["val_loss", "val_loss_logits", "val_acc", "val_pred_pos_rate", "val_logit_min",
                            "val_logit_max", *snap.keys] for snap in snapshots]
        self.steps: list[Step] = []
        self.ends: list[End] = []
        self.samples = 0
        self.hits = np.zeros(self.size)  # correct training predictions of the epoch in progress, earlier flushes
        self.seen = 0

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: Step) -> None:
        self.samples += step.z.shape[1]
        self.steps.append(step)

    def end_epoch(self, epoch: int, step: int, wall: float, val_z: torch.Tensor, bn: torch.Tensor | None) -> None:
        self.ends.append(End(epoch, step, wall, val_z, bn, self.samples, len(self.steps)))

    def pending_values(self) -> int:
        return sum(e.val_z.numel() for e in self.ends)

    def fetch(self, summaries: dict[int, Summary]) -> dict[int, Fetched]:
        """The `Fetched` of each member k of `summaries`, as its own `Window.fetch` would give it, its rows added
        to its `Summary` as the trainer's `report` does (most members' in one `Summary.add_many`)."""
        with torch.no_grad():
            return self._fetch(summaries)

    def _fetch(self, summaries: dict[int, Summary]) -> dict[int, Fetched]:
        members = list(summaries)
        steps, ends, samples = self.steps, self.ends, self.samples
        self.steps, self.ends, self.samples = [], [], 0
        if self.tracker is not None:
            self.tracker.reset()  # what it holds of these steps stays readable until the next step
        if not steps and not ends:
            return {k: Fetched(MetricBatch(), None, {}, [], {}, []) for k in members}
        m_all = self.size
        dev = (steps[0].z if steps else ends[0].val_z).device
        logged_at = [i for i, s in enumerate(steps) if s.logged]
        n = len(logged_at)
        parts: list[torch.Tensor] = []
        batches = _Sizes([s.z.shape[1] for s in steps], dev, m_all)
        if steps:
            zs, ys = batches.stack([s.z for s in steps]), batches.stack([s.y for s in steps])
            losses = torch.stack([s.loss for s in steps], dim=1).float()  # (members, steps)
            right = batches.join([((z >= 0) == (y > 0.5)).sum(dim=2, dtype=torch.float32) for z, y in zip(zs, ys)])
            hits = torch.cat([torch.zeros(m_all, 1, device=dev), right.cumsum(1)], dim=1)  # exact: whole numbers
            marks = hits[:, torch.tensor([e.at_step for e in ends] + [len(steps)], device=dev)]
            bad = batches.join(_nonfinite_rows(zs)) | ~torch.isfinite(losses)
        else:
            marks = torch.zeros(m_all, len(ends) + 1, device=dev)
            bad = torch.zeros(m_all, 0, dtype=torch.bool, device=dev)
        every = len(logged_at) == len(steps)  # every step logged: the stacks above serve the diagnostics too
        columns = self._diagnostics(steps, logged_at, losses if steps else None, bad,
                                    (batches, zs, ys) if steps and every else None)
        parts += [bad.float().reshape(-1), marks.reshape(-1)]
        for _, _, table in columns:
            parts.append(table.float().reshape(-1))
        if ends:
            val_host, val_columns = self._validation(ends)
            parts += [t.float().reshape(-1) for _, _, t in val_columns]
        flat = torch.cat(parts).cpu().numpy().astype(np.float64)

        # back on the host: every table by key, (members, width), and which members have the key
        at = 0
        bad_host = flat[at:at + m_all * len(steps)].reshape(m_all, len(steps)) > 0
        at += bad_host.size
        counts = flat[at:at + m_all * (len(ends) + 1)].reshape(m_all, len(ends) + 1)
        at += counts.size
        step_values, has = _by_key(flat, at, columns, m_all, n)
        at += sum(table.numel() for _, _, table in columns)
        step_values["lr"] = np.repeat(np.asarray(self.lrs, dtype=np.float64)[:, None], n, axis=1)
        epoch_values: dict[str, np.ndarray] = {}
        offsets = [0] + [e.offset for e in ends]
        if ends:
            n_ends = len(ends)
            scores = val_host.reshape(-1, val_host.shape[-1])
            seen = np.diff(offsets).astype(np.float64)
            seen[0] += self.seen
            right = np.diff(counts[:, :n_ends], axis=1, prepend=0.0)
            right[:, 0] += self.hits
            epoch_values = {"train_acc": right / np.maximum(seen, 1),
                            "val_auc": roc_auc_rows(scores, self.y_val_host).reshape(n_ends, m_all).T,
                            "val_ece": ece_rows(scores, self.y_val_host).reshape(n_ends, m_all).T}
            tables, epoch_has = _by_key(flat, at, val_columns, m_all, n_ends)
            epoch_values.update(tables)
            has.update(epoch_has)
            self.hits = counts[:, -1] - counts[:, -2]
            self.seen = samples - offsets[-1]
            curves = reliability_rows(val_host[-1], self.y_val_host)
        else:
            self.hits = self.hits + counts[:, -1]
            self.seen += samples
        # each member's rows go to its batch as arrays (`MetricBatch.add_block`), cut from one table of every key
        step_rows = _Table(step_values, has, m_all, n)
        epoch_rows = _Table(epoch_values, has, m_all, len(ends))
        logged_meta = [[steps[i].meta[j] for i in logged_at] for j in range(3)]  # step, epoch and wall of each row
        end_meta = [[e.step for e in ends], [e.epoch for e in ends], [e.wall for e in ends]]
        step_arrays = [np.asarray(col) for col in logged_meta]
        end_arrays = [np.asarray(col) for col in end_meta]
        out: dict[int, Fetched] = {}
        whole = []  # the members with every row of the window (no non-finite step): summarised together
        keeper = self.tracker.keeper() if self.tracker is not None and bad_host.any() else None
        went_bad = bad_host.any(axis=1).tolist()
        for k in members:
            first_bad = bad_step = None
            if not went_bad[k]:  # every logged step, as for most members: the columns as they are
                rows, kept_ends = n, len(ends)
                step_meta, epoch_meta, epochs, epoch_ids = step_arrays, end_arrays, logged_meta[1], end_meta[1]
                whole.append(k)
            else:  # up to the first non-finite step, and the epochs before its own
                bad_at = int(np.flatnonzero(bad_host[k])[0])
                first_bad = steps[bad_at].meta[:2]
                full = steps[bad_at].full
                kept = keeper(k, first_bad[0], full[2]) if keeper is not None and full is not None else None
                if kept is not None:  # that step was logged, and its rows kept
                    bad_step = self.member_step(k, full[0], kept)
                rows = sum(1 for i in logged_at if steps[i].meta[0] <= first_bad[0])
                kept_ends = sum(1 for e in ends if e.epoch < first_bad[1])
                step_meta, epoch_meta = [meta[:rows] for meta in step_arrays], [meta[:kept_ends] for meta in end_arrays]
                epochs, epoch_ids = logged_meta[1][:rows], end_meta[1][:kept_ends]
            batch = MetricBatch()
            keys, values = step_rows.member(k, rows)
            batch.add_block(keys, values, *step_meta)
            epoch_keys, epoch_table = epoch_rows.member(k, kept_ends)
            batch.add_block(epoch_keys, epoch_table, *epoch_meta)
            cols, epoch_columns = dict(zip(keys, values)), dict(zip(epoch_keys, epoch_table))
            curve = None
            if kept_ends:
                curve = curves[k] if kept_ends == len(ends) else reliability(val_host[kept_ends - 1, k],
                                                                              self.y_val_host)
            out[k] = Fetched(batch, first_bad, cols, epochs, epoch_columns, epoch_ids, curve, bad_step)
            if first_bad is not None:
                summaries[k].add_columns(cols, epochs)
                summaries[k].add_columns(epoch_columns, epoch_ids)
        if whole:  # every other member's summary, in one pass over their rows
            rows_of = None if len(whole) == m_all else np.asarray(whole)
            for values, ids in ((step_values, logged_meta[1]), (epoch_values, end_meta[1])):
                Summary.add_many([summaries[k] for k in whole],
                                 {key: v if rows_of is None else v[rows_of] for key, v in values.items()}, ids,
                                 {key: has[key] if rows_of is None else has[key][rows_of] for key in values
                                  if key in has})
        return out

    def member_step(self, k: int, z_grad: torch.Tensor, kept: list[torch.Tensor]) -> LoggedStep:
        """Member k's share of its first non-finite logged step, as the single-run trainer records it, from that
        step's z gradient (members, batch) and its kept (members, n) gradients, values before and after."""
        grads, before, after = kept

        def row(t: torch.Tensor) -> torch.Tensor:
            return t[k].clone() if self.own[k] is None else t[k, self.own[k]]  # a slot's row is reused
        return LoggedStep(z_grad[k], row(grads), row(before), row(after), [])  # (where_nonfinite reads no ReLU)

    def _diagnostics(self, steps: list[Step], logged_at: list[int], losses: torch.Tensor | None,
                     bad: torch.Tensor, stacked: tuple | None) -> list[tuple[list[str], torch.Tensor, torch.Tensor]]:
        """Every per-step metric as (keys, members, (keys, members, logged steps) table), in `Window`'s key order;
        marks the logged steps with a non-finite gradient norm in `bad`. `stacked`: the logged steps' `_Sizes`
        and stacks of z and y, when the caller has them."""
        if not steps:
            return []
        m_all, n, dev = self.size, len(logged_at), bad.device
        everyone = torch.arange(m_all, device=dev)
        at = torch.tensor(logged_at, dtype=torch.long, device=dev)
        out = [(["train_loss"], everyone, losses[:, at][None] if n != len(steps) else losses[None])]
        logged = [steps[i].full for i in logged_at if steps[i].full is not None]
        if not logged:
            return out
        if stacked is None:
            batches = _Sizes([steps[i].z.shape[1] for i in logged_at], dev, m_all)
            stacked = (batches, batches.stack([steps[i].z for i in logged_at]),
                       batches.stack([steps[i].y for i in logged_at]))
        batches, zs, ys = stacked
        z_grads = batches.stack([f[0] for f in logged])
        for cfg, idx in self.losses:
            k = len(idx)
            parts = []
            for z, y, z_grad in zip(zs, ys, z_grads):  # each (members, steps, batch): a row a member's step
                rows = z.shape[1]
                cols = row_output_diagnostics(_rows(z, idx).reshape(k * rows, -1), _rows(y, idx).reshape(k * rows, -1),
                                              loss=cfg.loss, clamp_eps=cfg.clamp_eps, pos_weight=cfg.pos_weight,
                                              z_grad=_rows(z_grad, idx).reshape(k * rows, -1))
                parts.append(torch.stack(list(cols.values())).view(len(cols), k, rows))
            out.append((list(cols), idx, batches.join(parts)))
        stats = self.tracker.collect([f[2] for f in logged])  # (5, steps, members, layers): `StepStats`
        updates = []
        for layout, idx, cols in self.layouts:
            # the layout's members and layers, once: each (steps, members of the layout, its layers)
            g_sq, a_sq, d_sq, live, stuck = _rows(stats, idx, dim=2)[..., cols].unbind(0)

            def per_layer(t: torch.Tensor) -> dict[str, torch.Tensor]:
                return {name: t[..., j] for j, name in enumerate(layout.ranges)}
            norms = norms_from_squares(per_layer(g_sq))  # each (steps, members of the layout)
            out.append((list(norms), idx, torch.stack(list(norms.values())).transpose(1, 2)))
            bad[idx[:, None], at[None, :]] |= ~torch.isfinite(norms["grad_norm"].T)
            ups = updates_from_squares(per_layer(d_sq), per_layer(a_sq), stuck.sum(dim=-1), live.sum(dim=-1))
            updates.append((list(ups), idx, torch.stack(list(ups.values())).transpose(1, 2)))
        out += updates
        out_max = None
        if any(out for _, out, _ in self.dead):
            out_max = batches.join([z.amax(dim=2) for z in zs])  # (members, steps)
        for relu, out_relu, idx in self.dead:
            maxes = []
            for j in range(len(logged[0][1]) if relu else 0):
                top = _rows(torch.stack([f[1][j] for f in logged], dim=1), idx)  # (members, steps, width)
                maxes.append(top.reshape(-1, top.shape[2]))
            dead = dead_frac_from_max(maxes, out_max[idx].reshape(-1) if out_relu else None)
            out.append((["dead_relu_frac"], idx, dead.view(1, len(idx), n)))
        return out

    def _validation(self, ends: list[End]) -> tuple[np.ndarray, list[tuple[list[str], torch.Tensor, torch.Tensor]]]:
        """The epochs' validation logits on the host, (epochs, members, n_val), and the epoch tables as
        (keys, members, (keys, members, epochs)), in `Window`'s key order."""
        z = torch.stack([e.val_z for e in ends])  # (epochs, members, n_val)
        zx = exact_dtype(z)
        y, yx = self.y_val.expand_as(z), self.y_val.to(zx.dtype).expand_as(z)  # views: the labels are shared
        pred = z >= 0
        shared = [(pred == (self.y_val > 0.5)).float().mean(dim=2), pred.float().mean(dim=2),
                  zx.amin(dim=2).float(), zx.amax(dim=2).float()]
        loss = torch.empty(z.shape[:2], device=z.device)
        exact = torch.empty(z.shape[:2], device=z.device)
        for cfg, idx in self.losses:  # every member's rows as they are when all share a loss (no copy)
            zi, yi, zxi, yxi = (_rows(t, idx, dim=1) for t in (z, y, zx, yx))
            loss[:, idx] = loss_fn(cfg, reduction="none")(zi, yi).float().mean(dim=2)
            exact[:, idx] = logits_loss(zxi, yxi, pos_weight=cfg.pos_weight, reduction="none").mean(dim=2).float()
        everyone = torch.arange(self.size, device=z.device)
        cols = [(["val_loss", "val_loss_logits", "val_acc", "val_pred_pos_rate", "val_logit_min", "val_logit_max"],
                 everyone, torch.stack([loss, exact, *shared]).transpose(1, 2))]
        if ends[0].bn is not None:
            snaps = torch.stack([e.bn for e in ends])  # (epochs, members, n)
            for snap, idx in self.bn:
                stats = snap.stats(_rows(snaps, idx, dim=1).reshape(-1, snaps.shape[2]))
                cols.append((snap.keys, idx, torch.stack(stats).view(len(stats), len(ends), -1).transpose(1, 2)))
        return zx.cpu().numpy(), cols


def _by_key(flat: np.ndarray, at: int, columns: list[tuple[list[str], torch.Tensor, torch.Tensor]], size: int,
            width: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The (keys, members, width) tables of `columns`, read back from `flat` at `at`, as one (size, width) array a
    key (NaN for a member without it), and for each key not every member has, which members have it."""
    values: dict[str, np.ndarray] = {}
    has: dict[str, np.ndarray] = {}
    for keys, idx, table in columns:
        rows = idx.tolist()
        block = flat[at:at + table.numel()].reshape(len(keys), len(rows), width)
        at += table.numel()
        everyone = rows == list(range(size))
        for key, part in zip(keys, block):
            if everyone:
                values[key] = part
                continue
            if key not in values:
                values[key] = np.full((size, width), np.nan)
                has[key] = np.zeros(size, dtype=bool)
            values[key][rows] = part
            has[key][rows] = True
    return values, has


class _Table:
    """The (members, width) arrays of `_by_key` as one (keys, members, width) table, and each member's keys (those
    it has: `has`) and rows, cut from it."""

    def __init__(self, values: dict[str, np.ndarray], has: dict[str, np.ndarray], size: int, width: int) -> None:
        self.keys = list(values)
        self.table = np.stack([values[key] for key in self.keys]) if self.keys else np.empty((0, size, width))
        self.has = [(j, has[key]) for j, key in enumerate(self.keys) if key in has]
        self.picks: dict[tuple[int, ...], tuple[list[str], np.ndarray | slice]] = {}

    def member(self, k: int, width: int) -> tuple[list[str], np.ndarray]:
        """Member k's keys and its (keys, `width`) values (the first `width` of each row)."""
        lacks = tuple(j for j, member_has in self.has if not member_has[k])
        if lacks not in self.picks:
            keep = [j for j in range(len(self.keys)) if j not in lacks]
            self.picks[lacks] = ([self.keys[j] for j in keep], np.asarray(keep) if lacks else slice(None))
        keys, rows = self.picks[lacks]
        return keys, self.table[rows, k, :width]


def _nonfinite_rows(zs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Which rows of each z (..., batch) hold a non-finite value. A sum is finite only if every term is: one sum
    clears the rows, and only when some sum is not finite (a non-finite value, or finite ones too large to add)
    are the values themselves tested. One read on the host for all of `zs` (a window's blocks of steps)."""
    suspects = [~torch.isfinite(z.sum(dim=-1)) for z in zs]
    if not suspects or not bool(torch.stack([s.any() for s in suspects]).any()):
        return suspects
    return [(~torch.isfinite(z)).any(dim=-1) for z in zs]


def _rows(t: torch.Tensor, idx: torch.Tensor, *, dim: int = 0) -> torch.Tensor:
    """`t`'s members `idx` along `dim`: `t` itself when they are all of them, in order (no copy)."""
    if len(idx) == t.shape[dim] and bool((idx == torch.arange(len(idx), device=idx.device)).all()):
        return t
    return t.index_select(dim, idx)


class _Sizes:
    """A window's steps grouped by batch size (one group in most windows), so that each group's (members, steps,
    batch) stack reduces along its batches, a row a member's step, with no index to scatter by. A group holds at
    most STACK_ROWS // `members` steps: each stack and each temporary made from it stays a few megabytes, reused
    by the allocator, where a whole window's would be fresh pages every flush."""

    def __init__(self, sizes: list[int], device: torch.device, members: int) -> None:
        groups: dict[int, list[int]] = {}
        for j, size in enumerate(sizes):
            groups.setdefault(size, []).append(j)
        block = max(1, STACK_ROWS // max(1, members))
        self.n = len(sizes)
        self.groups = [js[i:i + block] for js in groups.values() for i in range(0, len(js), block)]
        self.positions = [torch.tensor(js, device=device) for js in self.groups]

    def stack(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each group's (members, steps of the group, batch) stack of the steps' (members, batch) tensors."""
        return [torch.stack([tensors[j] for j in js], dim=1) for js in self.groups]

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Each group's (..., steps of the group) values -> (..., steps), in step order."""
        if len(parts) == 1:
            return parts[0]
        out = parts[0].new_empty((*parts[0].shape[:-1], self.n))
        for where, part in zip(self.positions, parts):
            out.index_copy_(out.dim() - 1, where, part)
        return out
