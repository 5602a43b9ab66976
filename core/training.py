"""The training loop. It reads a config, trains on one device and reports through a `Reporter`; it never touches
the database or the dashboard.

Per-step values stay on the device as 0-d tensors and are fetched in one transfer per flush (about once a
second), so a CUDA run does not wait on the GPU each step. The non-finite check is part of the same fetch: the run
stops at the first flush after a NaN/Inf and reports the exact step where it first appeared.
"""

from __future__ import annotations

import math
import time
import traceback
from itertools import chain, repeat
from dataclasses import dataclass, field
from typing import Callable

import torch

from core.config import ExperimentConfig
from core.data import Dataset, load_dataset
from core.diagnostics import GradLayout, batchnorm_stats, dead_frac_from_max, roc_auc, segment_output_diagnostics
from core.losses import logits_loss, loss_fn
from core.models import build_model
from core.reporting import MetricRow, Reporter, RunInfo, RunResult

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str, *, cuda_available: Callable[[], bool] = torch.cuda.is_available,
                   mps_available: Callable[[], bool] = torch.backends.mps.is_available) -> torch.device:
    """The device for a config's `device` field; a device that is asked for but missing is an error."""
    if name == "auto":
        if cuda_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not cuda_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA GPU on this machine; use cpu or auto")
    if name == "mps" and not mps_available():
        raise RuntimeError("device 'mps' was asked for, but this machine has no Apple MPS device; use cpu or auto")
    return torch.device(name)


def make_optimizer(cfg: ExperimentConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def batch_slices(n: int, batch_size: int, *, batchnorm: bool) -> list[slice]:
    """Batches of one epoch. With BatchNorm a trailing batch of a single sample is dropped: BatchNorm1d cannot
    train on it."""
    slices = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if batchnorm and len(slices) > 1 and slices[-1].stop - slices[-1].start == 1:
        slices.pop()
    return slices


@dataclass
class _Step:
    """What one optimizer step leaves for the next flush: references to tensors it computed anyway."""

    step: int
    epoch: int
    wall: float
    lr: float
    z: torch.Tensor  # the batch's pre-sigmoid values, detached
    y: torch.Tensor
    loss: torch.Tensor
    logged: bool
    z_grad: torch.Tensor | None = None  # full diagnostics on logged steps only
    grads: torch.Tensor | None = None  # every gradient as one flat vector, before clipping
    before: torch.Tensor | None = None  # all parameter values before and after the optimizer step (flat copies)
    after: torch.Tensor | None = None
    relu_max: list[torch.Tensor] = field(default_factory=list)  # per hidden ReLU layer, (width,)


@dataclass
class _Fetched:
    rows: list[MetricRow]
    first_bad: tuple[int, int] | None  # (step, epoch) of the first non-finite loss, logit or gradient
    correct: int  # training predictions that were right, over the fetched steps (for train_acc)
    seen: int
    columns: dict[str, list[float]]  # the rows' values by key, in step order (for the summary)
    epochs: list[int]  # the epoch of each position in those columns


class _Buffer:
    """Steps waiting for the next flush. `fetch` computes every diagnostic of the buffered steps in a few
    vectorised operations and brings them to the host in one transfer."""

    def __init__(self, cfg: ExperimentConfig, layout: GradLayout, *, output_relu: bool) -> None:
        self.cfg = cfg
        self.layout = layout
        self.output_relu = output_relu
        self.steps: list[_Step] = []

    def __len__(self) -> int:
        return len(self.steps)

    def fetch(self) -> _Fetched:
        steps, self.steps = self.steps, []
        if not steps:
            return _Fetched([], None, 0, 0, {}, [])
        z = torch.cat([s.z for s in steps])
        y = torch.cat([s.y for s in steps])
        losses = torch.stack([s.loss.float() for s in steps])
        logged_at = [i for i, s in enumerate(steps) if s.logged]
        logged = [steps[i] for i in logged_at]
        keys, table = self._diagnostics(logged, losses[logged_at])
        # One flag for the whole window; which step went bad is worked out only when one did (rarely).
        finite = torch.isfinite(z).all() & torch.isfinite(losses).all()
        if "grad_norm" in keys:
            finite &= torch.isfinite(table[:, keys.index("grad_norm")]).all()
        correct = ((z >= 0) == (y > 0.5)).sum()
        flat = torch.cat([torch.stack([finite.float(), correct.float()]), table.T.reshape(-1)]).cpu().tolist()

        first_bad = None if flat[0] else self._first_bad(steps, losses, table, keys, logged_at)
        kept = logged if first_bad is None else [s for s in logged if s.step <= first_bad[0]]
        m, n_logged = len(kept), len(logged)
        # Column-major: every key's values in step order, then lr, which the host already knows.
        columns = {k: flat[2 + j * n_logged:2 + j * n_logged + m] for j, k in enumerate(keys)}
        columns["lr"] = [s.lr for s in kept]
        step_ids, epochs, walls = [s.step for s in kept], [s.epoch for s in kept], [s.wall for s in kept]
        rows = list(chain.from_iterable(map(MetricRow, repeat(k, m), step_ids, epochs, col, walls)
                                        for k, col in columns.items()))
        return _Fetched(rows, first_bad, int(flat[1]), int(z.numel()), columns, epochs)

    @staticmethod
    def _first_bad(steps: list[_Step], losses: torch.Tensor, table: torch.Tensor, keys: list[str],
                   logged_at: list[int]) -> tuple[int, int] | None:
        """The (step, epoch) of the first non-finite loss, logit or gradient norm in the window."""
        bad = (~torch.isfinite(losses)).cpu().tolist()
        grad = (~torch.isfinite(table[:, keys.index("grad_norm")])).cpu().tolist() if "grad_norm" in keys else []
        for i, flag in zip(logged_at, grad):
            bad[i] = bad[i] or flag
        for i, s in enumerate(steps):
            if bad[i] or not bool(torch.isfinite(s.z).all()):
                return s.step, s.epoch
        return None

    def _diagnostics(self, logged: list[_Step], losses: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """A (logged steps, keys) table of every per-step metric."""
        if not logged or logged[0].z_grad is None:
            return ["train_loss"], losses.reshape(-1, 1)
        cfg = self.cfg
        z = torch.cat([s.z for s in logged])
        seg = _segments([s.z.numel() for s in logged], z.device)
        cols = {"train_loss": losses}
        cols.update(segment_output_diagnostics(z, torch.cat([s.y for s in logged]), seg, len(logged), loss=cfg.loss,
                                               clamp_eps=cfg.clamp_eps, pos_weight=cfg.pos_weight,
                                               z_grad=torch.cat([s.z_grad for s in logged])))
        cols.update(self.layout.norms(torch.stack([s.grads for s in logged])))
        cols["update_norm"] = (torch.stack([s.after for s in logged]) - torch.stack([s.before for s in logged])
                               ).double().norm(dim=1).float()
        relu_layers = [torch.stack([s.relu_max[j] for s in logged]) for j in range(len(logged[0].relu_max))]
        if relu_layers or self.output_relu:
            out_max = None
            if self.output_relu:
                out_max = torch.full((len(logged),), -math.inf, dtype=z.dtype, device=z.device).scatter_reduce_(
                    0, seg, z, "amax")
            cols["dead_relu_frac"] = dead_frac_from_max(relu_layers, out_max)
        return list(cols), torch.stack([c.float() for c in cols.values()], dim=1)


def _segments(sizes: list[int], device: torch.device) -> torch.Tensor:
    """seg[i] = the index of the step that sample i of the concatenated batches belongs to."""
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))


class _Summary:
    """Final, best and peak values, updated from each fetched batch of rows."""

    PEAKS = ("clamp_frac", "clamp_wrong_frac", "eps_clamp_frac", "grad_vanish_frac", "logit_abs_max", "dead_relu_frac")

    def __init__(self) -> None:
        self.final: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.lowest: dict[str, float] = {}
        self.best_val_loss = math.inf
        self.best_val_epoch: int | None = None
        self.best_val_acc = -math.inf
        self.zero_update_steps = 0

    def add(self, rows: list[MetricRow]) -> None:
        """Rows of one epoch's end (a value per key)."""
        self.add_columns({r.key: [r.value] for r in rows}, [r.epoch for r in rows[:1]])

    def add_columns(self, columns: dict[str, list[float]], epochs: list[int]) -> None:
        """Values by key, position i of every column measured in epoch `epochs[i]`."""
        for key, col in columns.items():
            if not col:
                continue
            self.final[key] = col[-1]
            if key in self.PEAKS or key == "pred_pos_rate":
                finite = [v for v in col if v == v]
                if finite:
                    self.peak[key] = max(self.peak.get(key, -math.inf), max(finite))
                    if key == "pred_pos_rate":
                        self.lowest[key] = min(self.lowest.get(key, math.inf), min(finite))
        for i, v in enumerate(columns.get("val_loss", ())):
            if v < self.best_val_loss:
                self.best_val_loss, self.best_val_epoch = v, epochs[i]
        for v in columns.get("val_acc", ()):
            self.best_val_acc = max(self.best_val_acc, v)
        if "update_norm" in columns:
            self.zero_update_steps += sum(1 for g, u in zip(columns["grad_norm"], columns["update_norm"])
                                          if u == 0.0 and g > 0.0)

    def as_dict(self, *, steps: int, epochs: int, diverged_step: int | None) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {"steps": steps, "epochs_completed": epochs}
        for key in ("train_loss", "train_loss_logits", "val_loss", "val_loss_logits", "val_acc", "val_auc",
                    "train_acc", "val_pred_pos_rate", "pred_pos_rate", "grad_norm", "update_norm", "logit_abs_max"):
            if key in self.final:
                out[f"final_{key}"] = self.final[key]
        for key, v in self.peak.items():
            out[f"peak_{key}"] = v
        for key, v in self.lowest.items():
            out[f"min_{key}"] = v
        if self.best_val_epoch is not None:
            out["best_val_loss"], out["best_val_epoch"] = self.best_val_loss, self.best_val_epoch
        if self.best_val_acc > -math.inf:
            out["best_val_acc"] = self.best_val_acc
        if "update_norm" in self.final:
            out["zero_update_steps"] = self.zero_update_steps
        out["diverged_step"] = diverged_step
        return out


def evaluate(model, x: torch.Tensor, y: torch.Tensor, cfg: ExperimentConfig) -> dict[str, float]:
    """Validation metrics in eval mode (BatchNorm uses its running statistics)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = model(x)
        loss = loss_fn(cfg)(z, y)
        zx = z.double() if z.dtype == torch.float64 else z.float()
        exact = logits_loss(zx, y.to(zx.dtype), pos_weight=cfg.pos_weight)
        pred = (z >= 0).float()
        values = torch.stack([loss.float(), exact.float(), (pred == y).float().mean(), pred.mean()]).cpu().tolist()
        scores = zx.cpu().numpy()
    model.train(was_training)
    return {"val_loss": values[0], "val_loss_logits": values[1], "val_acc": values[2],
            "val_auc": roc_auc(scores, y.float().cpu().numpy()), "val_pred_pos_rate": values[3]}


def train(cfg: ExperimentConfig, reporter: Reporter, *, data: Dataset | None = None, device: torch.device | None = None,
          clock: Callable[[], float] = time.perf_counter, flush_every_s: float = 1.0, flush_every_steps: int = 500,
          max_steps: int | None = None) -> RunResult:
    """Train one run of `cfg`, reporting as it goes. Never raises for a training failure: the result's status
    says what happened ("finished", "diverged", "failed" or "cancelled"). `max_steps` stops early (a dry run)."""
    start = clock()
    summary = _Summary()
    steps = epochs_done = 0
    diverged: tuple[int, int] | None = None
    buf: _Buffer | None = None
    status, error = "finished", None
    try:
        cfg.validate()
        data = data if data is not None else load_dataset(cfg)
        device = device if device is not None else resolve_device(cfg.device)
        dtype = DTYPES[cfg.dtype]
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data.n_features).to(device=device, dtype=dtype)
        model.train()
        full = cfg.diagnostics == "full"
        params = list(model.parameters())
        layout = GradLayout(model.named_layers(), params)
        if full:
            layout.flatten()  # before the optimizer sees the parameters: its state must follow the new storage
        opt = make_optimizer(cfg, params)
        compute_loss = loss_fn(cfg)
        model.record = full and model.hidden_relu
        buf = _Buffer(cfg, layout, output_relu=model.output_relu)
        bns = model.batchnorms()

        x_tr = torch.as_tensor(data.x_train, dtype=dtype, device=device)
        y_tr = torch.as_tensor(data.y_train, dtype=dtype, device=device)
        x_va = torch.as_tensor(data.x_val, dtype=dtype, device=device)
        y_va = torch.as_tensor(data.y_val, dtype=dtype, device=device)
        slices = batch_slices(len(y_tr), cfg.batch_size, batchnorm=cfg.batchnorm and bool(cfg.hidden))
        total = cfg.epochs * len(slices)
        if max_steps is not None:
            total = min(total, max_steps)
        # A step keeps about a batch of values and three parameter-sized vectors (gradient, values before and
        # after): bound the window so that large batches or models stay small in memory (4M values, 16 MB).
        flush_steps = max(1, min(flush_every_steps, 4_000_000 // (cfg.batch_size + (3 * layout.size if full else 0))))
        reporter.on_start(RunInfo(device=str(device), dtype=cfg.dtype, torch_version=torch.__version__,
                                  total_steps=total))
        gen = torch.Generator().manual_seed(cfg.seed)
        last_flush = clock()
        correct = seen = 0

        def flush() -> bool:
            """Fetch, report, and say whether to stop (divergence or cancel)."""
            nonlocal diverged, last_flush, status, error, correct, seen
            got = buf.fetch()
            correct, seen = correct + got.correct, seen + got.seen
            summary.add_columns(got.columns, got.epochs)
            bad = got.first_bad
            reporter.on_metrics(got.rows, step=steps if bad is None else bad[0])
            last_flush = clock()
            if bad is not None:
                diverged = bad
                status = "diverged"
                error = f"non-finite loss, logit or gradient at step {bad[0]} (epoch {bad[1]})"
                return True
            if reporter.should_stop():
                status, error = "cancelled", "cancelled on request"
                return True
            return False

        stop = False
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(y_tr), generator=gen).to(device)
            correct = seen = 0
            for sl in slices:
                idx = order[sl]
                xb, yb = x_tr[idx], y_tr[idx]
                z = model(xb)
                diagnose = full and steps % cfg.log_every == 0
                if diagnose:
                    z.retain_grad()
                loss = compute_loss(z, yb)
                if full:
                    layout.zero_grad()
                else:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                wall = clock() - start
                record = _Step(steps + 1, epoch, wall, opt.param_groups[0]["lr"], z.detach(), yb, loss.detach(),
                               logged=steps % cfg.log_every == 0)
                if diagnose:
                    record.z_grad = z.grad
                    record.grads = layout.flat_grads()  # before clipping: the gradient as computed
                    record.relu_max = [h.detach().amax(dim=0) for h in model.relu_outputs] if model.record else []
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    record.before = layout.values.clone()
                    opt.step()
                    record.after = layout.values.clone()
                else:
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                steps += 1
                buf.steps.append(record)
                if len(buf) >= flush_steps or clock() - last_flush >= flush_every_s:
                    if flush():
                        stop = True
                        break
                if max_steps is not None and steps >= max_steps:
                    break
            if stop:
                break
            # Epoch end: the pending steps, then validation and BatchNorm statistics.
            if flush():
                break
            val = evaluate(model, x_va, y_va, cfg)
            bn = batchnorm_stats(bns)
            bn_values = torch.stack(list(bn.values())).cpu().tolist() if bn else []
            rows = [MetricRow(k, steps, epoch, v, clock() - start) for k, v in
                    zip(("train_acc", *val, *bn), [correct / max(seen, 1), *val.values(), *bn_values])]
            summary.add(rows)
            reporter.on_metrics(rows, step=steps)
            epochs_done = epoch + 1
            if max_steps is not None and steps >= max_steps:
                break
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted by the user (Ctrl-C or SIGTERM)"
        if buf is not None:
            got = buf.fetch()  # keep what was measured before the interrupt
            summary.add_columns(got.columns, got.epochs)
            reporter.on_metrics(got.rows, step=steps)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a stored status, never a crash
        status = "failed"
        error = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc(limit=3)
        error = f"{error}\n{tb}" if len(tb) < 4000 else error
    result = RunResult(status=status, error=error, wall_time_s=clock() - start,
                       summary=summary.as_dict(steps=diverged[0] if diverged else steps, epochs=epochs_done,
                                               diverged_step=diverged[0] if diverged else None))
    reporter.on_finish(result)
    return result
