"""The training loop. It reads a config, trains on one device and reports through a `Reporter`; it never touches
the database or the dashboard.

Per-step values stay on the device as 0-d tensors and are fetched in one transfer per flush (about once a
second), so a CUDA run does not wait on the GPU each step. The non-finite check is part of the same fetch: the run
stops at the first flush after a NaN/Inf and reports the exact step where it first appeared.
"""

from __future__ import annotations

import contextlib
import gc
import time
import traceback
from typing import Callable

import numpy as np
import torch

from core.experiment.config import ExperimentConfig
from core.experiment.data import Dataset, load_dataset
from core.experiment.losses import loss_fn
from core.experiment.models import build_model
from core.training.diagnostics import BatchNormSnapshot, GradLayout, first_nonfinite_layer
from core.training.reporting import Reporter, RunInfo, RunResult, StoreUnavailable
from core.training.window import Fetched, LoggedStep, Summary, Window, report_pending

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


def input_scale(x: np.ndarray) -> dict[str, float]:
    """The scale of the training inputs as the first layer sees them (after `standardize`, if on): the largest
    feature standard deviation and the largest absolute value. Unscaled inputs (breast_cancer's raw features
    reach ~4,000) push the first logits far past the sigmoid's useful range."""
    if x.size == 0:
        return {}
    return {"input_std_max": float(np.nanmax(x.std(axis=0))), "input_abs_max": float(np.nanmax(np.abs(x)))}


def where_nonfinite(model, layout: GradLayout, x: torch.Tensor, bad_step: LoggedStep | None) -> dict[str, str]:
    """Where a divergence started, looked at once when a run diverges (never on the hot path): the first layer
    whose parameters were already non-finite before the bad step (`nonfinite_in` "update": an earlier step's
    update made them so, with finite logits, loss and gradient, as Adam's in float16 divides by a zero); else the
    first layer, in forward order, whose output on the training inputs is non-finite with the parameters of just
    before the bad step ("forward"); else the first layer whose gradient at that step was non-finite
    ("gradient"); else the first whose parameters after it were ("update"); else, when only the gradient's norm
    overflowed, the layer with the largest gradient ("gradient"). Without the bad step's values (it was not
    logged), the parameters as they are now."""
    if bad_step is not None and layout.values is not None:
        layout.values.copy_(bad_step.before)
        for name, spans in layout.ranges.items():
            if not all(torch.isfinite(bad_step.before[a:b]).all() for a, b in spans):
                return {"nonfinite_layer": name, "nonfinite_in": "update"}
    layer = first_nonfinite_layer(model, x)
    if layer is not None:
        return {"nonfinite_layer": layer, "nonfinite_in": "forward"}
    if bad_step is None:
        return {}
    for name, spans in layout.ranges.items():
        if not all(torch.isfinite(bad_step.grads[a:b]).all() for a, b in spans):
            return {"nonfinite_layer": name, "nonfinite_in": "gradient"}
    for name, spans in layout.ranges.items():
        if not all(torch.isfinite(bad_step.after[a:b]).all() for a, b in spans):
            return {"nonfinite_layer": name, "nonfinite_in": "update"}
    # every value finite: the gradient's norm overflowed (its square passed float32's range); name the layer with
    # the largest gradient
    largest = {name: max(float(bad_step.grads[a:b].double().abs().max()) for a, b in spans if b > a)
               for name, spans in layout.ranges.items()}
    return {"nonfinite_layer": max(largest, key=largest.get), "nonfinite_in": "gradient"} if largest else {}


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


def validate(model, x: torch.Tensor, mode_layers: list[torch.nn.Module]) -> torch.Tensor:
    """The validation logits in eval mode (BatchNorm uses its running statistics), left on the device: the
    metrics are computed from them when the trainer flushes, for many epochs at once. Only `mode_layers`, the
    layers whose forward pass reads the mode, are switched: `model.eval()` walks every module twice an epoch,
    which costs the article's model more than its validation pass."""
    for layer in mode_layers:
        layer.training = False
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for layer in mode_layers:
            layer.training = True


@contextlib.contextmanager
def _quiet_collector(young: int = 50_000):
    """Python's cyclic collector, tuned for a training loop while it runs.

    A run makes many short-lived objects (each step's record and tensors, each flush's rows) and no reference
    cycles of its own. With the default thresholds the collector traverses every step's record several times
    while it waits in the buffer and promotes it to older generations, and each full pass rescans every object
    of torch and the app (some 300,000, 0.15 s a pass). So the objects alive before the run are frozen (left out
    of every pass), and a young-generation pass waits for `young` new objects instead of 700: most records are
    gone by then, and memory stays bounded should anything make cycles. A caller's own freeze is kept."""
    mine = gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    if mine:
        gc.freeze()
    gc.set_threshold(max(young, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if mine:
            gc.unfreeze()


def train(cfg: ExperimentConfig, reporter: Reporter, *, data: Dataset | None = None, device: torch.device | None = None,
          clock: Callable[[], float] = time.perf_counter, flush_every_s: float = 1.0, flush_every_steps: int = 500,
          max_steps: int | None = None) -> RunResult:
    """Train one run of `cfg`, reporting as it goes. Never raises for a training failure: the result's status
    says what happened ("finished", "diverged", "failed" or "cancelled"). `max_steps` stops early (a dry run).

    Values are reported at each flush: every `flush_every_s` seconds, every `flush_every_steps` steps, and at
    the end. A cancel request is polled at each flush but the last."""
    with _quiet_collector():
        return _train(cfg, reporter, data=data, device=device, clock=clock, flush_every_s=flush_every_s,
                      flush_every_steps=flush_every_steps, max_steps=max_steps)


def _train(cfg: ExperimentConfig, reporter: Reporter, *, data: Dataset | None, device: torch.device | None,
           clock: Callable[[], float], flush_every_s: float, flush_every_steps: int, max_steps: int | None
           ) -> RunResult:
    start = clock()
    summary = Summary()
    steps = epochs_done = 0
    diverged: tuple[int, int] | None = None
    buf: Window | None = None
    status, error = "finished", None
    inputs: dict[str, float] = {}

    def report(got: Fetched) -> None:
        nonlocal epochs_done
        summary.add_columns(got.columns, got.epochs)
        summary.add_columns(got.epoch_columns, got.epoch_ids)
        if got.reliability is not None:
            summary.reliability = got.reliability
        if got.epoch_ids:
            epochs_done = got.epoch_ids[-1] + 1
        bad = got.first_bad
        reporter.on_metrics(got.batch, step=steps if bad is None else bad[0])

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

        inputs = input_scale(data.x_train)  # what the first layer sees: one host pass per run
        inputs["val_pos_frac"] = float(np.mean(data.y_val)) if len(data.y_val) else float("nan")
        x_tr = torch.as_tensor(data.x_train, dtype=dtype, device=device)
        y_tr = torch.as_tensor(data.y_train, dtype=dtype, device=device)
        x_va = torch.as_tensor(data.x_val, dtype=dtype, device=device)
        y_va = torch.as_tensor(data.y_val, dtype=dtype, device=device)
        bn = BatchNormSnapshot(model.batchnorms())
        buf = Window(cfg, layout, output_relu=model.output_relu, y_val=y_va, bn=bn)
        slices = batch_slices(len(y_tr), cfg.batch_size, batchnorm=cfg.batchnorm and bool(cfg.hidden))
        total = cfg.epochs * len(slices)
        if max_steps is not None:
            total = min(total, max_steps)
        # A step keeps about a batch of values, three parameter-sized vectors (gradient, values before and
        # after) and its hidden ReLU outputs, an epoch end the validation logits: bound the window so that large
        # batches, models or validation splits stay small in memory (4M values, 16 MB).
        window = 4_000_000
        per_step = cfg.batch_size + ((3 * layout.size + cfg.batch_size * sum(cfg.hidden) * model.record) if full else 0)
        flush_steps = max(1, min(flush_every_steps, window // per_step))
        reporter.on_start(RunInfo(device=str(device), dtype=cfg.dtype, torch_version=torch.__version__,
                                  total_steps=total))
        gen = torch.Generator().manual_seed(cfg.seed)
        last_flush = 0.0  # seconds since start

        def flush(*, last: bool = False) -> bool:
            """Fetch, report, and say whether to stop (divergence or cancel)."""
            nonlocal diverged, last_flush, status, error
            got = buf.fetch()
            report(got)
            last_flush = clock() - start
            if got.first_bad is not None:
                diverged = got.first_bad
                status = "diverged"
                summary.extra.update(where_nonfinite(model, layout, x_tr, got.bad_step))
                error = f"non-finite loss, logit or gradient at step {diverged[0]} (epoch {diverged[1]})"
                return True
            if not last and reporter.should_stop():
                status, error = "cancelled", "cancelled on request"
                return True
            return False

        log_every, clip = cfg.log_every, cfg.grad_clip
        batches = [(sl, sl.stop - sl.start) for sl in slices]
        mode_layers = model.mode_layers()
        stop = False
        after: torch.Tensor | None = None  # the parameter values after the last step, if it copied them
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(y_tr), generator=gen).to(device)
            for sl, size in batches:
                idx = order[sl]
                xb, yb = x_tr[idx], y_tr[idx]
                z = model(xb)
                logged = steps % log_every == 0
                diagnose = full and logged
                if diagnose:
                    z.retain_grad()
                loss = compute_loss(z, yb)
                if full:
                    layout.zero_grad()
                else:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                wall = clock() - start
                meta = (steps + 1, epoch, wall, opt.param_groups[0]["lr"])
                record = None
                if diagnose:
                    grads = layout.flat_grads()  # before clipping: the gradient as computed
                    if clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, clip)
                    # Nothing but the optimizer moves the parameters, so after one logged step the values
                    # before the next are the previous step's copy "after": one copy per step, not two.
                    before = after if after is not None else layout.values.clone()
                    opt.step()
                    after = layout.values.clone()
                    record = LoggedStep(z.grad, grads, before, after,
                                     list(model.relu_outputs) if model.record else [])
                else:
                    if clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, clip)
                    opt.step()
                    after = None
                steps += 1
                buf.add(z, yb, loss, meta, size, logged, record)
                if len(buf) >= flush_steps or wall - last_flush >= flush_every_s:
                    if flush():
                        stop = True
                        break
                if max_steps is not None and steps >= max_steps:
                    break
            if stop:
                break
            # Epoch end: validation and BatchNorm statistics, computed now and fetched with the next flush.
            buf.end_epoch(epoch, steps, clock() - start, validate(model, x_va, mode_layers), bn.take())
            if max_steps is not None and steps >= max_steps:
                break
            if buf.pending_values() >= window and flush():
                stop = True
                break
        if not stop:
            flush(last=True)
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted by the user (Ctrl-C or SIGTERM)"
        report_pending(buf, report)
    except StoreUnavailable as exc:  # the store's trouble, not the run's: rerun by a study's next resume
        status, error = "interrupted", str(exc)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a stored status, never a crash
        status = "failed"
        error = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc(limit=3)
        error = f"{error}\n{tb}" if len(tb) < 4000 else error
        report_pending(buf, report)
    result = RunResult(status=status, error=error, wall_time_s=clock() - start,
                       summary={**summary.as_dict(steps=diverged[0] if diverged else steps, epochs=epochs_done,
                                                  diverged_step=diverged[0] if diverged else None), **inputs})
    reporter.on_finish(result)
    return result
