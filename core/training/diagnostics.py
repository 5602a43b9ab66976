"""What the loss is doing, measured per optimizer step and per epoch.

Step diagnostics are computed on the training device. The trainer keeps each step's outputs and gradients as
they are and computes the diagnostics of many steps at once, when it flushes (`segment_output_diagnostics`), so
the step loop does little extra work and never waits on the GPU. Metric keys are part of the
contract with the store and the dashboard:

- `clamp_frac`: share of outputs whose sigmoid is exactly 0 or 1 in the compute dtype.
- `clamp_wrong_frac`: share of all outputs clamped on the wrong side (sigmoid 1 for a negative, 0 for a positive):
  BCELoss charges them 100 and gives them zero gradient.
- `eps_clamp_frac`: share of probabilities outside [eps, 1 - eps], when `clamp_eps` is set.
- `grad_vanish_frac`: share of samples whose gradient with respect to the pre-sigmoid value z is under 1% of
  |sigmoid(z) - y|, the gradient the exact loss would give.
- `logit_mean`, `logit_std`, `logit_abs_max`, `pred_pos_rate` (share with sigmoid(z) >= 0.5, i.e. z >= 0).
- `train_loss_logits`: BCEWithLogitsLoss on the same z, the exact loss; the gap to `train_loss` is the clamping.
- `margin_min`: the smallest margin (2y - 1) z of the batch: below minus the dtype's saturation logit, a sample is
  clamped on the wrong side.
- `update_ratio/<layer>`: the relative size of the optimizer's step, |delta W| / |W| (weights and bias together).
- `stuck_update_frac`: share of parameters with a non-zero gradient that the optimizer step left unchanged (the
  update rounded away in the compute dtype).
- `val_auc`, `val_ece` and the reliability curve, from the validation logits: `core.training.scores`.
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Iterable

import torch

from core.experiment.losses import logits_loss, sample_weights

VANISH_RATIO = 0.01


def exact_dtype(z: torch.Tensor) -> torch.Tensor:
    """z in at least float32, for reference values that must not inherit half precision's rounding."""
    return z if z.dtype == torch.float64 else z.float()


def output_diagnostics(z: torch.Tensor, y: torch.Tensor, *, loss: str, clamp_eps: float | None = None,
                       pos_weight: float = 1.0, z_grad: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Diagnostics of one batch of pre-sigmoid values `z` (compute dtype) against targets `y`, as 0-d tensors.

    `z_grad` is the gradient of the mean batch loss with respect to z (from `z.retain_grad()`); without it,
    `grad_vanish_frac` is left out.
    """
    seg = torch.zeros(z.numel(), dtype=torch.long, device=z.device)
    out = segment_output_diagnostics(z, y, seg, 1, loss=loss, clamp_eps=clamp_eps, pos_weight=pos_weight,
                                     z_grad=z_grad)
    return {k: v[0] for k, v in out.items()}


def segment_output_diagnostics(z: torch.Tensor, y: torch.Tensor, seg: torch.Tensor, n_seg: int, *, loss: str,
                               clamp_eps: float | None = None, pos_weight: float = 1.0,
                               z_grad: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The same diagnostics for many batches at once: `z`, `y` (and `z_grad`) are the batches concatenated and
    `seg[i]` says which of the `n_seg` batches sample i belongs to. Each value is a (n_seg,) float tensor.

    The trainer keeps each step's z and its gradient and computes everything here once per flush: a handful of
    vectorised operations instead of dozens of tiny ones per step.
    """
    return _output_diagnostics(z, y, _Segments(seg, n_seg, exact_dtype(z).dtype), loss=loss, clamp_eps=clamp_eps,
                               pos_weight=pos_weight, z_grad=z_grad)


def row_output_diagnostics(z: torch.Tensor, y: torch.Tensor, *, loss: str, clamp_eps: float | None = None,
                           pos_weight: float = 1.0, z_grad: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`segment_output_diagnostics` of batches of one size, one a row of `z`, `y` (and `z_grad`), (rows, batch):
    each value is a (rows,) float tensor. Reduced along the rows, with no index to scatter by: a population's
    flush, whose batches are the members' steps, computes its outputs' diagnostics this way."""
    return _output_diagnostics(z, y, _Rows(z.shape[0], z.shape[1], exact_dtype(z).dtype, z.device), loss=loss,
                               clamp_eps=clamp_eps, pos_weight=pos_weight, z_grad=z_grad)


class _Segments:
    """Reductions of samples to their batches, by a batch index per sample."""

    def __init__(self, seg: torch.Tensor, n_seg: int, dtype: torch.dtype) -> None:
        self.seg, self.n_seg = seg, n_seg
        self.counts = torch.bincount(seg, minlength=n_seg).to(dtype)

    def spread(self, per_batch: torch.Tensor) -> torch.Tensor:
        """Each sample's batch's value."""
        return per_batch[self.seg]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        dtype = self.counts.dtype
        return torch.zeros(self.n_seg, dtype=dtype, device=values.device).index_add_(0, self.seg,
                                                                                     values.to(dtype)) / self.counts

    def amax(self, values: torch.Tensor) -> torch.Tensor:
        return torch.full((self.n_seg,), -math.inf, dtype=values.dtype, device=values.device).scatter_reduce_(
            0, self.seg, values, "amax")

    def amin(self, values: torch.Tensor) -> torch.Tensor:
        return torch.full((self.n_seg,), math.inf, dtype=values.dtype, device=values.device).scatter_reduce_(
            0, self.seg, values, "amin")


class _Rows:
    """Reductions of samples to their batches, a batch a row."""

    def __init__(self, rows: int, size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.size = size
        self.counts = torch.full((rows,), float(size), dtype=dtype, device=device)

    def spread(self, per_batch: torch.Tensor) -> torch.Tensor:
        return per_batch[:, None]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum(dim=1, dtype=self.counts.dtype) / self.size

    def amax(self, values: torch.Tensor) -> torch.Tensor:
        return values.amax(dim=1)

    def amin(self, values: torch.Tensor) -> torch.Tensor:
        return values.amin(dim=1)


def _output_diagnostics(z: torch.Tensor, y: torch.Tensor, by: _Segments | _Rows, *, loss: str,
                        clamp_eps: float | None, pos_weight: float,
                        z_grad: torch.Tensor | None) -> dict[str, torch.Tensor]:
    z = z.detach()
    p = torch.sigmoid(z)  # in the compute dtype: that is where it rounds to exactly 0 or 1
    at_one, at_zero = p == 1, p == 0
    zx, yx = exact_dtype(z), exact_dtype(y.detach())
    counts, mean = by.counts, by.mean
    logit_mean = mean(zx)
    centred = zx - by.spread(logit_mean)
    dof = (counts - 1).clamp(min=1)
    out: dict[str, torch.Tensor] = {
        "train_loss_logits": mean(logits_loss(zx, yx, pos_weight=pos_weight, reduction="none")),
        "clamp_frac": mean(at_one | at_zero),
        "clamp_wrong_frac": mean((at_one & (y == 0)) | (at_zero & (y == 1))),
        "logit_mean": logit_mean,
        "logit_std": torch.where(counts > 1, (mean(centred * centred) * counts / dof).sqrt(), 0.0),
        "logit_abs_max": by.amax(zx.abs()),
        "pred_pos_rate": mean(z >= 0),
        "margin_min": by.amin((2 * yx - 1) * zx),
    }
    if loss == "bce" and clamp_eps is not None:
        out["eps_clamp_frac"] = mean((p < clamp_eps) | (p > 1 - clamp_eps))
    if z_grad is not None:
        # z_grad comes from a mean-reduced loss, so each sample's own gradient is n * z_grad / weight.
        g = exact_dtype(z_grad.detach()) * by.spread(counts)
        w = sample_weights(yx, pos_weight)
        if w is not None:
            g = g / w
        exact_p = p if zx.dtype == p.dtype else torch.sigmoid(zx)  # p when z is float32 or float64 already
        out["grad_vanish_frac"] = mean(g.abs() < VANISH_RATIO * (exact_p - yx).abs())
    return {k: v.float() for k, v in out.items()}


def grad_vanish_frac(z: torch.Tensor, y: torch.Tensor, z_grad: torch.Tensor, *,
                     pos_weight: float = 1.0) -> torch.Tensor:
    """Share of samples whose loss gradient w.r.t. z is under 1% of the exact |sigmoid(z) - y|."""
    return output_diagnostics(z, y, loss="bce_with_logits", pos_weight=pos_weight, z_grad=z_grad)["grad_vanish_frac"]


def dead_relu_frac(relu_outputs: list[torch.Tensor], z: torch.Tensor | None = None) -> torch.Tensor:
    """Share of ReLU units that output zero for every sample of the batch.

    `relu_outputs` are the hidden ReLU layers' (batch, width) outputs; `z`, when the model has the article's
    output ReLU, counts as one more unit (dead when every z in the batch is 0).
    """
    maxes = [h.amax(dim=0, keepdim=True) for h in relu_outputs]
    out_max = None if z is None else z.amax().reshape(1)
    return dead_frac_from_max(maxes, out_max)[0]


def dead_frac_from_max(layer_maxes: list[torch.Tensor], output_max: torch.Tensor | None) -> torch.Tensor:
    """Per step, from each ReLU layer's per-unit batch maximum (steps, width) and, for an output ReLU, the batch
    maximum of z (steps,): the share of units that were zero for the whole batch. (A ReLU output is >= 0, so a
    unit is dead exactly when its maximum is 0.)"""
    dead = [(m == 0).sum(dim=1) for m in layer_maxes]
    units = sum(m.shape[1] for m in layer_maxes)
    if output_max is not None:
        dead.append((output_max == 0).long())
        units += 1
    return torch.stack(dead).sum(dim=0).float() / units


class GradLayout:
    """All parameters and gradients of a model as two flat vectors, and which layer each element belongs to.

    `flatten()` makes every parameter (and its gradient) a view into one contiguous buffer, as data-parallel
    trainers do with gradient buckets. A step's whole gradient is then one `clone`, its update one `dist`, and
    `norms` turns a (steps, n) stack of gradients into `grad_norm` and `grad_norm/<layer>` in a few operations.
    """

    def __init__(self, named_layers: list[tuple[str, torch.nn.Module]], params: list[torch.Tensor]) -> None:
        owner = {id(p): name for name, m in named_layers for p in m.parameters()}
        self.params = params
        # Each layer's elements as (start, stop) ranges of the flat vector; a layer's parameters are usually
        # adjacent, so this is one range per layer.
        ends = [0, *accumulate(p.numel() for p in params)]
        self.ranges = layer_spans((owner[id(p)], a, b) for p, a, b in zip(params, ends, ends[1:]))
        self.size = ends[-1]
        self.values: torch.Tensor | None = None  # set by flatten()
        self.grads: torch.Tensor | None = None

    def flatten(self) -> "GradLayout":
        """Move every parameter and gradient into the flat buffers `values` and `grads`. Gradients then
        accumulate in place: clear them with `zero_grad()`, never by setting them to None."""
        first = self.params[0]
        self.values = torch.empty(self.size, dtype=first.dtype, device=first.device)
        self.grads = torch.zeros(self.size, dtype=first.dtype, device=first.device)
        offset = 0
        for p in self.params:
            n = p.numel()
            self.values[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = self.values[offset:offset + n].view_as(p)
            p.grad = self.grads[offset:offset + n].view_as(p)
            offset += n
        return self

    def zero_grad(self) -> None:
        self.grads.zero_()

    def flat_grads(self) -> torch.Tensor:
        """The current gradients as one vector (a copy)."""
        if self.grads is not None:
            return self.grads.clone()
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params])

    def norms(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """`grad_norm` and `grad_norm/<layer>` from flat gradient vectors (..., n) -> (...,) each."""
        return norms_from_squares(self.layer_squares(flat))

    def layer_squares(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per layer, the sum of squares of its elements of flat vectors (..., n) -> (...,), in float32 or 64."""
        return layer_squares(flat, self.ranges)

    def updates(self, delta: torch.Tensor, after: torch.Tensor, grads: torch.Tensor) -> dict[str, torch.Tensor]:
        """From (steps, n) stacks of parameter changes, values after each step and gradients: `update_norm`,
        `update_ratio/<layer>` (|delta| / |values|, per layer) and `stuck_update_frac`."""
        live = grads != 0
        return updates_from_squares(self.layer_squares(delta), self.layer_squares(after),
                                    ((delta == 0) & live).sum(dim=1), live.sum(dim=1))


def layer_spans(pieces: Iterable[tuple[str, int, int]]) -> dict[str, list[tuple[int, int]]]:
    """Each layer's (start, stop) spans of a flat row, from its pieces (layer, start, stop) in row order: a piece
    that starts where its layer's last span stops extends that span."""
    out: dict[str, list[tuple[int, int]]] = {}
    for layer, a, b in pieces:
        spans = out.setdefault(layer, [])
        if spans and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return out


def span_sum(x: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """The sum over the last dimension of `x`'s elements in `spans`, (start, stop) ranges: (...,)."""
    parts = [x[..., a:b].sum(dim=-1) for a, b in spans]
    return sum(parts[1:], parts[0])


def layer_squares(flat: torch.Tensor, ranges: dict[str, list[tuple[int, int]]]) -> dict[str, torch.Tensor]:
    """Per layer of `ranges` (its elements' (start, stop) spans), the sum of squares of its elements of flat
    vectors (..., n) -> (...,), in float64 for float64 values, else float32."""
    sq = flat.double().square() if flat.dtype == torch.float64 else flat.float().square()
    return {name: span_sum(sq, spans) for name, spans in ranges.items()}


def norms_from_squares(squares: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`grad_norm` and `grad_norm/<layer>` from each layer's sum of squared gradients (`layer_squares`)."""
    total = torch.stack(list(squares.values())).sum(dim=0).sqrt()
    return {"grad_norm": total.float(), **{f"grad_norm/{name}": v.sqrt().float() for name, v in squares.items()}}


def updates_from_squares(moved: dict[str, torch.Tensor], size: dict[str, torch.Tensor], stuck: torch.Tensor,
                         live: torch.Tensor) -> dict[str, torch.Tensor]:
    """`update_norm`, `update_ratio/<layer>` and `stuck_update_frac` from each layer's sums of squared parameter
    changes (`moved`) and values after the step (`size`), and the counts of elements whose gradient was not zero
    (`live`) and, of those, whose value did not change (`stuck`)."""
    out = {"update_norm": torch.stack(list(moved.values())).sum(dim=0).sqrt().float()}
    for name in moved:
        out[f"update_ratio/{name}"] = (moved[name].sqrt() / size[name].sqrt().clamp(min=1e-30)).float()
    out["stuck_update_frac"] = stuck.float() / live.clamp(min=1).float()
    return out


def grad_norms(named_layers: list[tuple[str, torch.nn.Module]]) -> dict[str, torch.Tensor]:
    """`grad_norm` (all parameters) and `grad_norm/<layer>` for each parametrised layer, from the current grads."""
    layout = GradLayout(named_layers, [p for _, m in named_layers for p in m.parameters()])
    return layout.norms(layout.flat_grads())


def first_nonfinite_layer(model, x: torch.Tensor) -> str | None:
    """The first layer, in forward order, whose output on `x` is NaN or infinite ("fc1", "bn0", "act2", "out"),
    or None when the whole forward pass is finite. For a model built by `core.experiment.models`."""
    with torch.no_grad():
        if not torch.isfinite(x).all():
            return "input"
        for i, block in enumerate(model.hidden):
            for name, module in block.named_children():
                x = module(x)
                if not torch.isfinite(x).all():
                    return f"{name}{i}"
        if not torch.isfinite(model.out(x)).all():
            return "out"
    return None


class BatchNormSnapshot:
    """The running statistics of every BatchNorm layer as one flat vector: one copy per epoch, and the per-layer
    figures (smallest running variance, largest absolute running mean) for many epochs at once, when the
    trainer flushes."""

    def __init__(self, batchnorms: list[tuple[str, torch.nn.BatchNorm1d]]) -> None:
        self.batchnorms = batchnorms
        self.keys = [k for name, _ in batchnorms
                     for k in (f"bn_min_running_var/{name}", f"bn_max_abs_running_mean/{name}")]

    def take(self) -> torch.Tensor | None:
        if not self.batchnorms:
            return None
        return torch.cat([t.detach().float() for _, bn in self.batchnorms for t in (bn.running_var, bn.running_mean)])

    def stats(self, snaps: torch.Tensor) -> list[torch.Tensor]:
        """`snaps`: (epochs, size) stacked snapshots. One (epochs,) tensor per key, in the order of `keys`."""
        out, at = [], 0
        for _, bn in self.batchnorms:
            n = bn.num_features
            out.append(snaps[:, at:at + n].amin(dim=1))
            out.append(snaps[:, at + n:at + 2 * n].abs().amax(dim=1))
            at += 2 * n
        return out


def batchnorm_stats(batchnorms: list[tuple[str, torch.nn.BatchNorm1d]]) -> dict[str, torch.Tensor]:
    """Per BatchNorm layer now: smallest running variance and largest absolute running mean."""
    snap = BatchNormSnapshot(batchnorms)
    taken = snap.take()
    if taken is None:
        return {}
    return {k: v[0] for k, v in zip(snap.keys, snap.stats(taken[None]))}


def saturation_logits(dtype: torch.dtype) -> tuple[float, float]:
    """The smallest z with sigmoid(z) == 1 and the largest z with sigmoid(z) == 0 in `dtype`, found by scanning.

    Past these, BCELoss on probabilities sees exactly 0 or 1: its log term is clamped at -100 and the gradient
    of a wrong prediction is zero. (float32: about 16.6 and -88.7; float16: 8.3 and -17.3; bfloat16: 6.25 and -89.)
    """
    grid = torch.arange(0, 800, 0.001, dtype=torch.float64)
    z = grid.to(dtype)
    top = torch.nonzero(torch.sigmoid(z) == 1)
    bottom = torch.nonzero(torch.sigmoid(-z) == 0)
    pos = float(z[top[0, 0]]) if len(top) else math.inf
    neg = -float(z[bottom[0, 0]]) if len(bottom) else -math.inf
    return pos, neg
