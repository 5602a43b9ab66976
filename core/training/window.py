"""The trainer's measurement window: the steps and epoch ends waiting for the next flush, and the run summary.

A step leaves only references to tensors it computed anyway; `Window.fetch` computes every per-step diagnostic of
the window with segment reductions and brings them, with the epochs' validation values, to the host in one
transfer. `Summary` keeps the final, best and peak values that findings and tables read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from core.experiment.config import ExperimentConfig
from core.experiment.losses import logits_loss, loss_fn
from core.training.diagnostics import (BatchNormSnapshot, GradLayout, dead_frac_from_max, exact_dtype,
                                       segment_output_diagnostics)
from core.training.scores import ece_rows, reliability, roc_auc_rows
from core.training.reporting import MetricBatch
from core.training.summary import Summary

__all__ = ["EpochEnd", "Fetched", "LoggedStep", "Summary", "Window", "report_pending"]


@dataclass(slots=True)
class LoggedStep:
    """What a logged step with full diagnostics leaves for the next flush, besides its logits, labels and loss
    (the buffer keeps these in step order, beside the positions of the logged steps)."""

    z_grad: torch.Tensor
    grads: torch.Tensor  # every gradient as one flat vector, before clipping
    before: torch.Tensor  # all parameter values before and after the optimizer step (flat copies;
    # `before` may be the previous logged step's `after`)
    after: torch.Tensor
    relu_out: list[torch.Tensor]  # per hidden ReLU layer, (batch, width)


@dataclass
class EpochEnd:
    """What an epoch's end leaves for the next flush: validation and BatchNorm values, still on the device."""

    epoch: int
    step: int  # optimizer steps done when the epoch ended
    wall: float
    val_z: torch.Tensor  # the validation logits, in the compute dtype
    bn: torch.Tensor | None  # BatchNorm running statistics (`BatchNormSnapshot.take`)
    offset: int  # training samples buffered before this epoch's end (where its train_acc count stops)


@dataclass
class Fetched:
    batch: MetricBatch  # the step rows, then the epoch rows
    first_bad: tuple[int, int] | None  # (step, epoch) of the first non-finite loss, logit or gradient
    columns: dict[str, Any]  # the step rows' values by key, in step order (for the summary): lists, or arrays
    epochs: list[int]  # the epoch of each position in those columns
    epoch_columns: dict[str, Any]  # the same for the epoch rows
    epoch_ids: list[int]
    reliability: dict[str, list[float]] | None = None  # the last kept epoch's reliability curve on validation
    bad_step: LoggedStep | None = None  # the full diagnostics of the first non-finite step, if it was logged


class Window:
    """Steps and epoch ends waiting for the next flush. A step leaves only references to tensors it computed
    anyway: its logits, labels and loss (and, with full diagnostics, a `LoggedStep`). `fetch` computes every
    per-step value from them in a few vectorised operations and brings them, with the epochs' validation values,
    to the host in one transfer: a flush costs the same whether it holds one epoch or a hundred, so flushes
    follow the clock, not the epochs."""

    def __init__(self, cfg: ExperimentConfig, layout: GradLayout, *, output_relu: bool, y_val: torch.Tensor,
                 bn: BatchNormSnapshot) -> None:
        self.cfg = cfg
        self.loss = loss_fn(cfg, reduction="none")
        self.layout = layout
        self.output_relu = output_relu
        self.y_val = y_val
        self.y_val_host = y_val.float().cpu().numpy()  # for ROC AUC
        self.bn = bn
        self.epoch_keys = ["val_loss", "val_loss_logits", "val_acc", "val_pred_pos_rate", "val_logit_min",
                           "val_logit_max", *bn.keys]
        # every buffered step's logits, labels and loss (as computed: backward has released their graph, and a
        # detached copy would cost a tensor per step) and (step, epoch, wall time, lr); the positions of the
        # logged steps and their full diagnostics
        self.z: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.meta: list[tuple[int, int, float, float]] = []
        self.logged_at: list[int] = []
        self.logged: list[LoggedStep] = []
        self.ends: list[EpochEnd] = []
        self._work: dict[str, torch.Tensor] = {}  # see `_work_like`
        self.samples = 0  # training samples in the window
        self.hits = 0  # correct training predictions of the epoch in progress, from earlier flushes
        self.seen = 0

    def __len__(self) -> int:
        return len(self.z)

    def add(self, z: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, meta: tuple[int, int, float, float],
            size: int, logged: bool, full: LoggedStep | None = None) -> None:
        self.samples += size
        if logged:
            self.logged_at.append(len(self.z))
            if full is not None:
                self.logged.append(full)
        self.z.append(z)
        self.y.append(y)
        self.losses.append(loss)
        self.meta.append(meta)

    def end_epoch(self, epoch: int, step: int, wall: float, val_z: torch.Tensor, bn: torch.Tensor | None) -> None:
        self.ends.append(EpochEnd(epoch, step, wall, val_z, bn, self.samples))

    def pending_values(self) -> int:
        return sum(e.val_z.numel() for e in self.ends)

    def fetch(self) -> Fetched:
        with torch.no_grad():  # the logits and losses still require grad
            return self._fetch()

    def _fetch(self) -> Fetched:
        zs, ys, ls, meta, logged_at, logged = self.z, self.y, self.losses, self.meta, self.logged_at, self.logged
        ends, samples = self.ends, self.samples
        self.z, self.y, self.losses, self.meta, self.logged_at, self.logged, self.ends = [], [], [], [], [], [], []
        self.samples = 0
        if not zs and not ends:
            return Fetched(MetricBatch(), None, {}, [], {}, [])
        dev = (zs[0] if zs else ends[0].val_z).device
        if zs:
            z, y = torch.cat(zs), torch.cat(ys)
            losses = torch.stack(ls).float()
            # correct predictions counted up to each epoch end and to the window's end
            hits = torch.cat([torch.zeros(1, device=dev), ((z >= 0) == (y > 0.5)).float().cumsum(0)])
            marks = hits[torch.tensor([e.offset for e in ends] + [samples], device=dev)]
            finite = torch.isfinite(z).all() & torch.isfinite(losses).all()
        else:
            z = y = losses = torch.zeros(0, device=dev)
            marks = torch.zeros(len(ends) + 1, device=dev)
            finite = torch.ones((), dtype=torch.bool, device=dev)
        keys, table = self._diagnostics(z, y, zs, ys, logged_at, logged, losses)
        # One flag for the whole window; which step went bad is worked out only when one did (rarely).
        if "grad_norm" in keys:
            finite &= torch.isfinite(table[:, keys.index("grad_norm")]).all()
        parts = [finite.float().reshape(1), marks, table.T.reshape(-1)]
        if ends:
            val_z, val_table = self._validation(ends)
            parts.append(val_table.reshape(-1))
        flat = torch.cat(parts).cpu().tolist()

        bad_at = None if flat[0] else self._first_bad(z, zs, losses, table, keys, logged_at)
        first_bad = None if bad_at is None else meta[bad_at][:2]
        bad_step = logged[logged_at.index(bad_at)] if bad_at in logged_at and len(logged) == len(logged_at) \
            else None
        kept = logged_at if first_bad is None else [i for i in logged_at if meta[i][0] <= first_bad[0]]
        m, n_logged, pos = len(kept), len(logged_at), 2 + len(ends)
        # Column-major: every key's values in step order, then lr, which the host already knows.
        columns = {k: flat[pos + j * n_logged:pos + j * n_logged + m] for j, k in enumerate(keys)}
        kept_meta = meta if m == len(meta) else [meta[i] for i in kept]
        step_ids, epochs, walls, columns["lr"] = (list(col) for col in zip(*kept_meta)) if kept else ([], [], [], [])
        batch = MetricBatch()
        for k, col in columns.items():
            batch.add_series(k, step_ids, epochs, col, walls)

        # Epoch rows: validation, BatchNorm and train_acc of every epoch that ended before any divergence.
        pos += len(keys) * n_logged
        n_keys, counts = len(self.epoch_keys), flat[1:2 + len(ends)]
        epoch_columns: dict[str, list[float]] = {k: [] for k in ("train_acc", "val_auc", "val_ece",
                                                                   *self.epoch_keys)}
        epoch_ids = []
        aucs = roc_auc_rows(val_z, self.y_val_host).tolist() if ends else []
        eces = ece_rows(val_z, self.y_val_host).tolist() if ends else []
        offsets = [0] + [e.offset for e in ends]  # counts[i]: correct predictions before offsets[i + 1]
        for i, e in enumerate(ends):
            right = self.hits + counts[i] - (counts[i - 1] if i else 0.0)
            seen = self.seen + offsets[i + 1] - offsets[i]
            self.hits = self.seen = 0
            if first_bad is not None and e.epoch >= first_bad[1]:
                break
            epoch_ids.append(e.epoch)
            epoch_columns["train_acc"].append(right / max(seen, 1))
            epoch_columns["val_auc"].append(aucs[i])
            epoch_columns["val_ece"].append(eces[i])
            for j, k in enumerate(self.epoch_keys):
                epoch_columns[k].append(flat[pos + i * n_keys + j])
            for k, col in epoch_columns.items():
                batch.add(k, e.step, e.epoch, col[-1], e.wall)
        self.hits += counts[-1] - (counts[-2] if ends else 0.0)  # the epoch in progress, carried to the next flush
        self.seen += samples - offsets[-1]
        curve = reliability(val_z[len(epoch_ids) - 1], self.y_val_host) if epoch_ids else None
        return Fetched(batch, first_bad, columns, epochs, epoch_columns, epoch_ids, curve, bad_step)

    def _validation(self, ends: list[EpochEnd]) -> tuple[np.ndarray, torch.Tensor]:
        """The epochs' validation logits on the host (for ROC AUC) and an (epochs, `epoch_keys`) table, computed
        for all pending epochs at once."""
        cfg = self.cfg
        z = torch.stack([e.val_z for e in ends])  # (epochs, n_val), compute dtype
        y = self.y_val.expand_as(z)
        loss = self.loss(z, y)
        zx = exact_dtype(z)
        exact = logits_loss(zx, y.to(zx.dtype), pos_weight=cfg.pos_weight, reduction="none")
        pred = z >= 0
        cols = [loss.float().mean(dim=1), exact.mean(dim=1).float(), (pred == (y > 0.5)).float().mean(dim=1),
                pred.float().mean(dim=1), zx.amin(dim=1).float(), zx.amax(dim=1).float()]
        if ends[0].bn is not None:
            cols += self.bn.stats(torch.stack([e.bn for e in ends]))
        return zx.cpu().numpy(), torch.stack(cols, dim=1)

    def _work_like(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A buffer of `like`'s shape, kept between flushes. A fresh tensor of several MB costs a page fault per
        4 kB on every flush; the window's stacks of gradients and parameter values are that big."""
        buf = self._work.get(name)
        if buf is None or buf.dtype != like.dtype or buf.device != like.device or buf.shape[1:] != like.shape[1:] \
                or buf.shape[0] < like.shape[0]:
            buf = self._work[name] = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        return buf[:like.shape[0]]

    def _stack(self, name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = self._work_like(name, tensors[0].expand(len(tensors), *tensors[0].shape))
        return torch.stack(tensors, out=out)

    @staticmethod
    def _first_bad(z: torch.Tensor, zs: list[torch.Tensor], losses: torch.Tensor, table: torch.Tensor,
                   keys: list[str], logged_at: list[int]) -> int | None:
        """The position in the window of the first step with a non-finite loss, logit or gradient norm."""
        n, seg = len(zs), _segments([t.shape[0] for t in zs], z.device)
        bad = ~torch.isfinite(losses)
        bad |= torch.zeros(n, device=z.device).index_add_(0, seg, (~torch.isfinite(z)).float()) > 0
        if "grad_norm" in keys:
            at = torch.tensor(logged_at, dtype=torch.long, device=z.device)
            bad[at] |= ~torch.isfinite(table[:, keys.index("grad_norm")])
        flags = bad.cpu().tolist()
        return next((i for i, flag in enumerate(flags) if flag), None)

    def _diagnostics(self, z: torch.Tensor, y: torch.Tensor, zs: list[torch.Tensor],
                     ys: list[torch.Tensor], logged_at: list[int], logged: list[LoggedStep], losses: torch.Tensor
                     ) -> tuple[list[str], torch.Tensor]:
        """A (logged steps, keys) table of every per-step metric, from the window's logits `z` and labels `y`,
        the same per step (`zs`, `ys`), and the full diagnostics of its logged steps, if any."""
        n = len(logged_at)
        if n != len(losses):  # not every step logged: the logged steps' own values
            losses = losses[torch.tensor(logged_at, device=losses.device)]
            if logged:
                zs, ys = [zs[i] for i in logged_at], [ys[i] for i in logged_at]
                z, y = torch.cat(zs), torch.cat(ys)
        if not logged:
            return ["train_loss"], losses.reshape(-1, 1)
        cfg = self.cfg
        seg = _segments([t.shape[0] for t in zs], z.device)
        cols = {"train_loss": losses}
        cols.update(segment_output_diagnostics(z, y, seg, n, loss=cfg.loss, clamp_eps=cfg.clamp_eps,
                                               pos_weight=cfg.pos_weight,
                                               z_grad=torch.cat([s.z_grad for s in logged])))
        grads = self._stack("grads", [s.grads for s in logged])
        cols.update(self.layout.norms(grads))
        after = [s.after for s in logged]
        if all(s.before is prev.after for prev, s in zip(logged, logged[1:])):
            # every step logged: one stack of the values before the window and after each step
            values = self._stack("values", [logged[0].before, *after])
            after_stack = values[1:]
            delta = torch.sub(values[1:], values[:-1], out=self._work_like("delta", values[1:]))
        else:
            after_stack = self._stack("after", after)
            delta = after_stack - self._stack("before", [s.before for s in logged])
        cols.update(self.layout.updates(delta, after_stack, grads))
        # each unit's largest output in each step's batch, per hidden ReLU layer: (steps, width)
        relu_layers = []
        for j in range(len(logged[0].relu_out)):
            h = torch.cat([s.relu_out[j] for s in logged])
            relu_layers.append(torch.full((n, h.shape[1]), -math.inf, dtype=h.dtype, device=h.device)
                               .scatter_reduce_(0, seg[:, None].expand_as(h), h, "amax"))
        if relu_layers or self.output_relu:
            out_max = None
            if self.output_relu:
                out_max = torch.full((n,), -math.inf, dtype=z.dtype, device=z.device).scatter_reduce_(
                    0, seg, z, "amax")
            cols["dead_relu_frac"] = dead_frac_from_max(relu_layers, out_max)
        return list(cols), torch.stack([c.float() for c in cols.values()], dim=1)


def _segments(sizes: list[int], device: torch.device) -> torch.Tensor:
    """seg[i] = the index of the step that sample i of the concatenated batches belongs to."""
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))


def report_pending(buf: Window | None, report: Callable[[Fetched], None]) -> None:
    """Keep what was measured before an interrupt or a failure, where it can still be fetched."""
    if buf is None:
        return
    try:
        report(buf.fetch())
    except Exception:  # noqa: BLE001 - the run's own error is the one to report
        pass
