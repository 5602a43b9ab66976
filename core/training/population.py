"""Population training: many configs that differ only in what can be batched, trained side by side as one model.

`train_population(cfgs, reporters)` trains every config as a member of one `StackedClassifier`: one batched
forward and backward pass and one optimizer update a step for all members, each member with its own seed (its
initial weights and its batch order are those `trainer.train` gives that seed), learning rate, weight decay,
activation, loss, BatchNorm on or off (and its eps and momentum), clamp eps, pos_weight, optimizer, SGD momentum,
gradient clipping, ELU alpha, hidden bias init, output ReLU and epochs (a member of fewer ends after its own last
one), its own optimizer state and BatchNorm statistics.
`groups.group_key(cfg)` says which configs can share a population: those with equal keys.

Each member reports through its own `Reporter` exactly as a single run does: a `PopulationWindow` computes every
member's diagnostics with the trainer's own functions, for all members and a window of steps at once, and hands each
member the `Fetched` its own `Window` would give; each member keeps its own `Summary`. The metric keys, steps,
summary and findings are those of `trainer.train`, the values equal up to the rounding of batched products. A
member that diverges, is cancelled or whose reporter fails stops alone: it is finished (`on_finish`) at that flush
and leaves the loss, so its parameters no longer move; the others go on.
"""

from __future__ import annotations

import time
import traceback
from typing import Callable

import numpy as np
import torch

from core.experiment.config import ExperimentConfig
from core.experiment.data import Dataset, load_dataset
from core.experiment.losses import loss_fn
from core.training.batched_optim import BatchedOptimizer, Clip
from core.training.diagnostics import BatchNormSnapshot, GradLayout
from core.training.groups import BATCHABLE, group_key
from core.training.reporting import Reporter, RunInfo, RunResult, StoreUnavailable
from core.training.stacked import StackedClassifier, stacking_order
from core.training.trainer import (DTYPES, _quiet_collector, batch_slices, input_scale, resolve_device,
                                   where_nonfinite)
from core.training.population_step import Step, tracker
from core.training.population_window import PopulationWindow
from core.training.window import Fetched, Summary

WINDOW = 4_000_000  # values a member's window may hold, as in trainer.train ...
WINDOW_MEMBERS = 16  # ... and a population's window, that many members' worth (256 MB in float32)
# A flush writes every member's rows, a transaction and a chunk per metric for each, and the store merges a run's
# chunks when it ends. A population flushes every second, as a lone run does (or when its window is full, and
# never sooner than twice its last flush took): live views and a cancel request are seen at the next flush.
FLUSH_EVERY_S = 1.0
FLUSH_EVERY_STEPS = 5000


class _Member:
    """One member's run: its config, reporter, summary and status."""

    def __init__(self, k: int, cfg: ExperimentConfig, reporter: Reporter) -> None:
        self.k, self.cfg, self.reporter = k, cfg, reporter
        self.summary = Summary()
        self.epochs_done = 0
        self.diverged: tuple[int, int] | None = None
        self.status, self.error = "finished", None
        self.result: RunResult | None = None

    @property
    def alive(self) -> bool:
        return self.result is None

    def report(self, got: Fetched, steps: int) -> None:
        """As `trainer.train`'s own `report`, the rows already in the summary (`PopulationWindow.fetch`)."""
        self.reporter.on_metrics(got.batch, step=self.note(got, steps))

    def note(self, got: Fetched, steps: int) -> int:
        """`report` but for handing the rows over: the summary's calibration and the epochs done; returns the
        step the rows go with."""
        if got.reliability is not None:
            self.summary.reliability = got.reliability
        if got.epoch_ids:
            self.epochs_done = got.epoch_ids[-1] + 1
        return steps if got.first_bad is None else got.first_bad[0]

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, StoreUnavailable):  # the store's trouble, not the run's: rerun by a study's resume
            self.status, self.error = "interrupted", str(exc)
            return
        self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc(limit=3)
        self.error = f"{self.error}\n{tb}" if len(tb) < 4000 else self.error

    def finish(self, steps: int, wall: float, inputs: dict[str, float]) -> None:
        finish_all([self], steps, wall, inputs)


def finish_all(members: list[_Member], steps: int, wall: float, inputs: dict[str, float]) -> None:
    """End `members` (as `_Member.finish`), their summaries made together (`Summary.as_dicts`)."""
    bad = [m.diverged for m in members]
    summaries = Summary.as_dicts([m.summary for m in members], steps=[d[0] if d else steps for d in bad],
                                 epochs=[m.epochs_done for m in members],
                                 diverged_steps=[d[0] if d else None for d in bad])
    for m, summary in zip(members, summaries):
        m.result = RunResult(status=m.status, error=m.error, wall_time_s=wall, summary={**summary, **inputs})
    ended = handled([m.reporter for m in members], "on_finish_many",
                    lambda many, idx: many([members[i].reporter for i in idx], [members[i].result for i in idx]))
    for m in [m for m, done in zip(members, ended) if not done]:
        try:
            m.reporter.on_finish(m.result)
        except Exception:  # noqa: BLE001 - one member's reporter must not stop the others
            pass


def _by_class(reporters: list[Reporter], method: str) -> list[tuple[Callable, list[int]]]:
    """The reporters' classes that offer `method` (a call for many of their reporters at once), each with the
    positions of its reporters."""
    by_class: dict[type, list[int]] = {}
    for i, r in enumerate(reporters):
        by_class.setdefault(type(r), []).append(i)
    return [(getattr(cls, method), idx) for cls, idx in by_class.items() if hasattr(cls, method)]


def ask_many(reporters: list[Reporter], method: str, call: Callable[[Callable, list[int]], list]) -> list:
    """Each reporter's answer from its class's `method` for many of its reporters at once, as bools (None where
    its class has no such method, or its call raised: nothing of it is kept, and the caller goes one by one, so
    that a failure stops its own member only); `call(many, positions)` calls it. The methods, each optional:
    `on_start_many(reporters, info)`, `on_metrics_many(reporters, batches, steps)`, `on_finish_many(reporters,
    results)` (each says which it handled: a store's reporters write in one transaction) and
    `should_stop_many(reporters)` (a store's reporters read every cancel flag in one query)."""
    out: list[bool | None] = [None] * len(reporters)
    for many, idx in _by_class(reporters, method):
        try:
            answers = call(many, idx)
        except Exception:  # noqa: BLE001 - one by one
            continue
        for i, answer in zip(idx, answers):
            out[i] = bool(answer)
    return out


def poll_stops(reporters: list[Reporter]) -> list[bool | None]:
    """Each reporter's `should_stop()` where its class answers for many at once (`ask_many`), else None: that
    one is asked on its own."""
    return ask_many(reporters, "should_stop_many", lambda many, idx: many([reporters[i] for i in idx]))


def handled(reporters: list[Reporter], method: str, call: Callable[[Callable, list[int]], list[bool]]) -> list[bool]:
    """Which reporters a class's `method` for many at once handled (`ask_many`); the caller goes one by one
    through the others."""
    return [bool(answer) for answer in ask_many(reporters, method, call)]


def member_losses(cfgs: list[ExperimentConfig], device: torch.device | None = None
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(z, y) of shape (members, batch) -> each member's mean loss (members,), every member with its own loss,
    clamp eps and pos_weight (`losses.loss_fn` of its config, on the rows of the members that share them)."""
    kinds: dict[tuple, list[int]] = {}
    for k, cfg in enumerate(cfgs):
        kinds.setdefault((cfg.loss, cfg.clamp_eps, cfg.pos_weight), []).append(k)
    parts = [(loss_fn(cfgs[ks[0]], reduction="none"), ks) for ks in kinds.values()]
    if len(parts) == 1:
        fn = parts[0][0]
        return lambda z, y: fn(z, y).mean(dim=1)
    inverse = torch.argsort(torch.tensor([k for _, ks in parts for k in ks], device=device))
    rows = [torch.tensor(ks, device=device) for _, ks in parts]  # on the device once: no transfer a step

    def compute(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(z[r], y[r]).mean(dim=1) for (fn, _), r in zip(parts, rows)])[inverse]
    return compute


def train_population(cfgs: list[ExperimentConfig], reporters: list[Reporter], *, data: Dataset | None = None,
                     device: torch.device | None = None, clock: Callable[[], float] = time.perf_counter,
                     flush_every_s: float = FLUSH_EVERY_S, flush_every_steps: int = FLUSH_EVERY_STEPS,
                     max_steps: int | None = None) -> list[RunResult]:
    """Train `cfgs` (equal `group_key`s) as one population, member i reporting through `reporters[i]`; the
    arguments are `trainer.train`'s, with flushes further apart by default (`FLUSH_EVERY_S`). Never raises for a
    training failure: each result's status says what happened to that member. Flushes follow the clock, but at
    least twice as far apart as a flush of every member takes."""
    if len(cfgs) != len(reporters) or not cfgs:
        raise ValueError(f"a population needs one reporter per config; got {len(cfgs)} configs and "
                         f"{len(reporters)} reporters")
    if len({group_key(c) for c in cfgs}) > 1:
        raise ValueError("a population's configs may differ only in " + ", ".join(BATCHABLE) + "; group them "
                         "with groups.populations()")
    order = stacking_order(cfgs)  # members sharing a branch of the model adjacent: each layer runs on slices
    members = [_Member(k, cfgs[i], reporters[i]) for k, i in enumerate(order)]
    with _quiet_collector():
        _train(members, data=data, device=device, clock=clock, flush_every_s=flush_every_s,
               flush_every_steps=flush_every_steps, max_steps=max_steps)
    results: list[RunResult] = [None] * len(cfgs)  # type: ignore[list-item]
    for i, m in zip(order, members):
        results[i] = m.result
    return results


def _train(members: list[_Member], *, data: Dataset | None, device: torch.device | None,
           clock: Callable[[], float], flush_every_s: float, flush_every_steps: int, max_steps: int | None) -> None:
    start = clock()
    cfgs = [m.cfg for m in members]
    base = cfgs[0]
    steps = 0
    inputs: dict[str, float] = {}
    buf: PopulationWindow | None = None

    def report_pending() -> None:
        """Keep what was measured before an interrupt or a failure, where it can still be fetched."""
        try:
            got = buf.fetch({m.k: m.summary for m in members if m.alive}) if buf is not None else {}
            for k, fetched in got.items():
                members[k].report(fetched, steps)
        except Exception:  # noqa: BLE001 - the run's own error is the one to report
            pass

    try:
        for cfg in cfgs:
            cfg.validate()
        data = data if data is not None else load_dataset(base)
        device = device if device is not None else resolve_device(base.device)
        dtype = DTYPES[base.dtype]
        model = StackedClassifier(cfgs, data.n_features, device=device, dtype=dtype)
        full = base.diagnostics == "full"
        opt = BatchedOptimizer(cfgs, model.values, model.grads)
        losses = member_losses(cfgs, device)
        inputs = input_scale(data.x_train)
        inputs["val_pos_frac"] = float(np.mean(data.y_val)) if len(data.y_val) else float("nan")
        x_tr = torch.as_tensor(data.x_train, dtype=dtype, device=device)
        y_tr = torch.as_tensor(data.y_train, dtype=dtype, device=device)
        x_va = torch.as_tensor(data.x_val, dtype=dtype, device=device)
        y_va = torch.as_tensor(data.y_val, dtype=dtype, device=device)
        record = full and any(model.relu)
        # what the window holds a step, each member: logits and labels, and with full diagnostics the logits'
        # gradient, each ReLU unit's batch maximum and the update statistics (5 a layer)
        per_step = 0
        layouts, snapshots = [], []
        shared: dict[bool, tuple[GradLayout, BatchNormSnapshot]] = {}  # one per parameter layout (`model.own`)
        for m in members:
            whole = model.own[m.k] is None  # the member's parameters are the whole row, or all but BatchNorm's
            if whole not in shared:  # what the window reads of them is the layers' ranges and names
                single = model.single(m.k)
                shared[whole] = (GradLayout(single.named_layers(), list(single.parameters())),
                                 BatchNormSnapshot(single.batchnorms()))
            layouts.append(shared[whole][0])
            snapshots.append(shared[whole][1])
            per_step += 2 * base.batch_size + ((base.batch_size + sum(base.hidden) * model.relu[m.k]
                                                + 5 * len(model.layer_ranges)) if full else 0)
        buf = PopulationWindow(cfgs, layouts, snapshots, model.own, model.relu, layer_ranges=model.layer_ranges,
                               output_relu=model.out_relu, y_val=y_va)
        updates = buf.tracker = tracker(model.layer_ranges, len(members), model.values) if full else None
        window = WINDOW * min(len(members), WINDOW_MEMBERS)
        slots = updates.slots if updates is not None else None  # logged steps' rows it can hold: one in log_every
        flush_steps = max(1, min(flush_every_steps, window // per_step,
                                 slots * base.log_every if slots else flush_every_steps))
        slices = batch_slices(len(y_tr), base.batch_size, batchnorm=model.with_bn)
        epochs = max(c.epochs for c in cfgs)  # a member with fewer ends after its own (`ending`)
        ending: dict[int, list[_Member]] = {}
        by_total: dict[int, list[_Member]] = {}  # the members by their own total steps, each told its own
        for m in members:
            if m.cfg.epochs < epochs:
                ending.setdefault(m.cfg.epochs - 1, []).append(m)
            total = m.cfg.epochs * len(slices)
            by_total.setdefault(total if max_steps is None else min(total, max_steps), []).append(m)
        for total, ones in by_total.items():
            info = RunInfo(device=str(device), dtype=base.dtype, torch_version=torch.__version__, total_steps=total)
            started = handled([m.reporter for m in ones], "on_start_many",
                              lambda many, idx, ones=ones, info=info: many([ones[i].reporter for i in idx], info))
            for m in [m for m, done in zip(ones, started) if not done]:
                try:
                    m.reporter.on_start(info)
                except Exception as exc:  # noqa: BLE001 - this member fails, the others go on
                    m.fail(exc)
                    m.finish(0, clock() - start, inputs)
        gens = {s: torch.Generator().manual_seed(s) for s in dict.fromkeys(c.seed for c in cfgs)}
        alive = torch.tensor([m.alive for m in members], device=device)
        everyone = all(m.alive for m in members)  # on the host: no sync a step
        last_flush, interval = 0.0, flush_every_s

        def flush(*, last: bool = False, ending: tuple[_Member, ...] = ()) -> bool:
            """Fetch and report every live member, stop those that diverged or were cancelled, and finish those
            `ending` (members whose epochs end before the others': this is their last flush, which, as a lone
            run's last flush, asks them nothing); say whether none is left."""
            nonlocal last_flush, interval, alive, everyone
            began = clock()
            fetched = buf.fetch({m.k: m.summary for m in members if m.alive})
            live = [m for m in members if m.alive]
            rows = [(m, fetched[m.k], m.note(fetched[m.k], steps)) for m in live]
            sent = handled([m.reporter for m, _, _ in rows], "on_metrics_many", lambda many, idx: many(
                [rows[i][0].reporter for i in idx], [rows[i][1].batch for i in idx], [rows[i][2] for i in idx]))
            for (m, got, step), done in zip(rows, sent):
                try:
                    if not done:
                        m.reporter.on_metrics(got.batch, step=step)
                    if got.first_bad is not None:
                        m.diverged, m.status = got.first_bad, "diverged"
                        single = model.load_member(m.k)  # its own layout, flattened now: for a member that diverged
                        layout = GradLayout(single.named_layers(), list(single.parameters())).flatten()
                        m.summary.extra.update(where_nonfinite(single, layout, x_tr, got.bad_step))
                        m.error = f"non-finite loss, logit or gradient at step {m.diverged[0]} " \
                                  f"(epoch {m.diverged[1]})"
                except Exception as exc:  # noqa: BLE001 - this member fails, the others go on
                    m.fail(exc)
            asking = [m for m in live if m.status == "finished" and m not in ending] if not last else []
            for m, stop in zip(asking, poll_stops([m.reporter for m in asking])):
                try:
                    if stop if stop is not None else m.reporter.should_stop():
                        m.status, m.error = "cancelled", "cancelled on request"
                except Exception as exc:  # noqa: BLE001 - this member fails, the others go on
                    m.fail(exc)
            for m in live:
                if m.status != "finished":
                    m.finish(steps, clock() - start, inputs)
            finish_all([m for m in ending if m.alive], steps, clock() - start, inputs)
            last_flush = clock() - start
            interval = max(flush_every_s, 2 * (clock() - began))
            alive = torch.tensor([m.alive for m in members], device=device)
            everyone = all(m.alive for m in members)
            return not any(m.alive for m in members)

        clip, log_every = Clip.of(cfgs, model.values), base.log_every
        stop = False
        for epoch in range(epochs):
            perms = {s: torch.randperm(len(y_tr), generator=g) for s, g in gens.items()}
            order = torch.stack([perms[c.seed] for c in cfgs]).to(device)
            for sl in slices:
                idx = order[:, sl]
                xb, yb = x_tr[idx], y_tr[idx]
                logged = steps % log_every == 0
                diagnose = full and logged
                z, relu = model.forward(xb, record=record and diagnose)
                if diagnose:
                    z.retain_grad()
                loss = losses(z, yb)
                model.grads.zero_()
                (loss.sum() if everyone else torch.where(alive, loss, 0.0).sum()).backward()
                wall = clock() - start
                diag = None
                if diagnose:  # the update statistics' tracker takes the step (`population_step.tracker`)
                    grads = updates.grads(model.grads, clip is not None)  # as computed, before clipping
                    if clip is not None:
                        clip(model.grads, model.spans)
                    before = updates.before(model.values)
                    opt.step()
                    maxes = [h.detach().amax(dim=1) for h in relu]  # each unit's batch maximum: dead or not
                    diag = (z.grad, maxes, updates.after(steps + 1, z, loss, grads, before, model.values))
                else:
                    if clip is not None:
                        clip(model.grads, model.spans)
                    opt.step()
                steps += 1
                buf.add(Step(z, yb, loss.detach(), (steps, epoch, wall), logged, diag))
                if len(buf) >= flush_steps or wall - last_flush >= interval:
                    if flush():
                        stop = True
                        break
                if max_steps is not None and steps >= max_steps:
                    break
            if stop:
                break
            buf.end_epoch(epoch, steps, clock() - start, model.validate(x_va), model.bn_snapshot())
            if max_steps is not None and steps >= max_steps:
                break
            done = tuple(m for m in ending.get(epoch, []) if m.alive)
            if done and flush(ending=done):  # their last epoch: finished as their lone runs end, the others go on
                stop = True
                break
            if buf.pending_values() >= window and flush():
                stop = True
                break
        if not stop:
            flush(last=True)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - every failure becomes a stored status
        cancel = isinstance(exc, KeyboardInterrupt)
        for m in [m for m in members if m.alive]:
            if cancel:
                m.status, m.error = "cancelled", "interrupted by the user (Ctrl-C or SIGTERM)"
            else:
                m.fail(exc)
        report_pending()
    finish_all([m for m in members if m.alive], steps, clock() - start, inputs)
