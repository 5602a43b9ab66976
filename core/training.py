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
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core.config import ExperimentConfig
from core.data import Dataset, load_dataset
from core.diagnostics import (batchnorm_stats, dead_relu_frac, grad_norms, output_diagnostics, roc_auc)
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
class _Buffer:
    """Device-side values waiting for the next fetch: (step, epoch, wall, keys, stacked values)."""

    entries: list[tuple[int, int, float, tuple[str, ...], torch.Tensor]] = field(default_factory=list)
    bad: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)  # (step, epoch, non-finite flag)

    def fetch(self) -> tuple[list[MetricRow], tuple[int, int] | None]:
        """One host transfer for everything buffered. Returns the rows and the first (step, epoch) that was
        non-finite, with the rows after it dropped."""
        tensors = [t for *_, t in self.entries] + [b for *_, b in self.bad]
        if not tensors:
            return [], None
        flat = torch.cat([t.reshape(-1).float() for t in tensors]).cpu().tolist()
        rows: list[MetricRow] = []
        pos = 0
        for step, epoch, wall, keys, _ in self.entries:
            rows.extend(MetricRow(k, step, epoch, v, wall) for k, v in zip(keys, flat[pos:pos + len(keys)]))
            pos += len(keys)
        first_bad = None
        for (step, epoch, _), flag in zip(self.bad, flat[pos:]):
            if flag:
                first_bad = (step, epoch)
                break
        if first_bad is not None:
            rows = [r for r in rows if r.step <= first_bad[0]]
        self.entries.clear()
        self.bad.clear()
        return rows, first_bad


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
        self._pending_grad: dict[int, float] = {}

    def add(self, rows: list[MetricRow]) -> None:
        for r in rows:
            self.final[r.key] = r.value
            if r.key in self.PEAKS and not math.isnan(r.value):
                self.peak[r.key] = max(self.peak.get(r.key, -math.inf), r.value)
            if r.key == "pred_pos_rate":
                self.lowest[r.key] = min(self.lowest.get(r.key, math.inf), r.value)
                self.peak[r.key] = max(self.peak.get(r.key, -math.inf), r.value)
            if r.key == "val_loss" and r.value < self.best_val_loss:
                self.best_val_loss, self.best_val_epoch = r.value, r.epoch
            if r.key == "val_acc" and r.value > self.best_val_acc:
                self.best_val_acc = r.value
            if r.key == "grad_norm":
                self._pending_grad[r.step] = r.value
            if r.key == "update_norm":
                g = self._pending_grad.pop(r.step, math.nan)
                if r.value == 0.0 and g > 0.0:
                    self.zero_update_steps += 1

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
    buf = _Buffer()
    status, error = "finished", None
    try:
        cfg.validate()
        data = data if data is not None else load_dataset(cfg)
        device = device if device is not None else resolve_device(cfg.device)
        dtype = DTYPES[cfg.dtype]
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data.n_features).to(device=device, dtype=dtype)
        model.train()
        opt = make_optimizer(cfg, model.parameters())
        compute_loss = loss_fn(cfg)
        full = cfg.diagnostics == "full"
        model.record = full and model.hidden_relu
        layers = model.named_layers()
        params = [p for p in model.parameters()]
        bns = model.batchnorms()

        x_tr = torch.as_tensor(data.x_train, dtype=dtype, device=device)
        y_tr = torch.as_tensor(data.y_train, dtype=dtype, device=device)
        x_va = torch.as_tensor(data.x_val, dtype=dtype, device=device)
        y_va = torch.as_tensor(data.y_val, dtype=dtype, device=device)
        slices = batch_slices(len(y_tr), cfg.batch_size, batchnorm=cfg.batchnorm and bool(cfg.hidden))
        total = cfg.epochs * len(slices)
        if max_steps is not None:
            total = min(total, max_steps)
        reporter.on_start(RunInfo(device=str(device), dtype=cfg.dtype, torch_version=torch.__version__,
                                  total_steps=total))
        gen = torch.Generator().manual_seed(cfg.seed)
        last_flush = clock()

        def flush() -> bool:
            """Fetch, report, and say whether to stop (divergence or cancel)."""
            nonlocal diverged, last_flush, status, error
            rows, bad = buf.fetch()
            summary.add(rows)
            reporter.on_metrics(rows, step=steps if bad is None else bad[0])
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
            correct = torch.zeros((), device=device)
            seen = 0
            for sl in slices:
                idx = order[sl]
                xb, yb = x_tr[idx], y_tr[idx]
                z = model(xb)
                log_now = steps % cfg.log_every == 0
                if full and log_now:
                    z.retain_grad()
                loss = compute_loss(z, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                wall = clock() - start
                if full and log_now:
                    diag = output_diagnostics(z, yb, loss=cfg.loss, clamp_eps=cfg.clamp_eps,
                                              pos_weight=cfg.pos_weight, z_grad=z.grad)
                    diag.update(grad_norms(layers))
                    if model.record or model.output_relu:
                        diag["dead_relu_frac"] = dead_relu_frac(model.relu_outputs if model.record else [],
                                                                z.detach() if model.output_relu else None)
                    before = [p.detach().clone() for p in params]
                    opt.step()
                    diffs = torch._foreach_sub([p.detach() for p in params], before)
                    diag["update_norm"] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)).float())
                    keys = ("train_loss",) + tuple(diag) + ("lr",)
                    values = torch.stack([loss.detach().float(), *diag.values(),
                                          torch.tensor(float(opt.param_groups[0]["lr"]), device=device)])
                    bad = ~(torch.isfinite(loss) & torch.isfinite(z.detach()).all() & torch.isfinite(diag["grad_norm"]))
                else:
                    opt.step()
                    keys, values = ("train_loss",), loss.detach().float().reshape(1)
                    bad = ~(torch.isfinite(loss) & torch.isfinite(z.detach()).all())
                steps += 1
                if log_now:
                    buf.entries.append((steps, epoch, wall, keys, values))
                buf.bad.append((steps, epoch, bad))
                correct += ((z.detach() >= 0).to(yb.dtype) == yb).sum()
                seen += len(idx)
                if len(buf.bad) >= flush_every_steps or clock() - last_flush >= flush_every_s:
                    if flush():
                        stop = True
                        break
                if max_steps is not None and steps >= max_steps:
                    break
            if stop:
                break
            # Epoch end: validation and BatchNorm statistics, fetched with the pending step values.
            if flush():
                break
            val = evaluate(model, x_va, y_va, cfg)
            epoch_keys = ("train_acc",) + tuple(val)
            epoch_vals = [float(correct.item()) / max(seen, 1)] + list(val.values())
            bn = {k: v.item() for k, v in batchnorm_stats(bns).items()}
            rows = [MetricRow(k, steps, epoch, v, clock() - start) for k, v in
                    zip(epoch_keys + tuple(bn), epoch_vals + list(bn.values()))]
            summary.add(rows)
            reporter.on_metrics(rows, step=steps)
            epochs_done = epoch + 1
            if max_steps is not None and steps >= max_steps:
                break
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted by the user (Ctrl-C or SIGTERM)"
        rows, _ = buf.fetch()  # keep what was measured before the interrupt
        summary.add(rows)
        reporter.on_metrics(rows, step=steps)
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
