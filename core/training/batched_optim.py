"""SGD, Adam and AdamW over a population's stacked parameters: each member with its own optimizer, learning rate,
weight decay and SGD momentum.

`torch.optim` takes one learning rate per parameter group, and a group per member would cost a Python loop over
the members every step. These are the same updates as `torch.optim`'s single-tensor code (the one it uses on the
CPU), written over the (members, n) tensor with the per-member factors as (members, 1) columns, in the same
order of operations: a member's update equals its single run's up to the rounding of the batched products that
produced its gradient. Also `clip_`, `torch.nn.utils.clip_grad_norm_` per member.
"""

from __future__ import annotations

import torch

from core.experiment.config import ExperimentConfig

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which the single-run trainer uses
EPS = 1e-8


class BatchedOptimizer:
    """Each member's own optimizer (`cfg.optimizer`) over its row of the (members, n) `values` and `grads`: one
    update a step for each run of adjacent members that share an optimizer (`stacking_order` makes them adjacent),
    on views of their rows."""

    def __init__(self, cfgs: list[ExperimentConfig], values: torch.Tensor, grads: torch.Tensor) -> None:
        starts = [k for k in range(len(cfgs)) if k == 0 or cfgs[k].optimizer != cfgs[k - 1].optimizer]
        bounds = list(zip(starts, [*starts[1:], len(cfgs)]))
        self.parts = [_Optimizer(cfgs[a:b], values[a:b], grads[a:b]) for a, b in bounds]

    def step(self) -> None:
        for part in self.parts:
            part.step()


class _Optimizer:
    """SGD, Adam or AdamW (the members share which) over the members' rows."""

    def __init__(self, cfgs: list[ExperimentConfig], values: torch.Tensor, grads: torch.Tensor) -> None:
        self.kind = cfgs[0].optimizer
        momenta = [c.momentum for c in cfgs]
        # SGD's momentum: one number when the members share it (as `torch.optim.SGD` takes it), else a column; a
        # member without momentum then keeps a buffer too, and buffer * 0 + grad is its grad, as its lone run's
        self.momentum: float | torch.Tensor = momenta[0]
        if len(set(momenta)) > 1:
            self.momentum = torch.tensor(momenta, dtype=torch.float64).view(-1, 1).to(dtype=_opmath(values.dtype),
                                                                                      device=values.device)
        self.values, self.grads = values, grads
        lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64).view(-1, 1)
        wd = torch.tensor([c.weight_decay for c in cfgs], dtype=torch.float64).view(-1, 1)
        column = dict(dtype=_opmath(values.dtype), device=values.device)
        self.neg_lr = (-lr).to(**column)
        self.decay = None if not wd.any() else wd.to(**column)
        if self.kind == "adamw" and self.decay is not None:
            self.decay = (1 - lr * wd).to(**column)  # decoupled: param *= 1 - lr * wd
        # the learning rates in float64 where the parameters are (MPS has no float64): the step size is computed
        # there each step, with no transfer from the host
        self.lr = lr.to(device=values.device) if values.device.type != "mps" else lr.float().to(values.device)
        self.buf: torch.Tensor | None = None  # SGD's momentum buffer
        self.exp_avg = torch.zeros_like(values) if self.kind != "sgd" else None
        self.exp_avg_sq = torch.zeros_like(values) if self.kind != "sgd" else None
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        g, p = self.grads, self.values
        if self.kind == "sgd":
            if self.decay is not None:
                g = _decayed(g, p, self.decay)
            if isinstance(self.momentum, torch.Tensor) or self.momentum != 0:
                if self.buf is None:
                    self.buf = g.clone()
                else:
                    self.buf.mul_(self.momentum).add_(g)
                g = self.buf
            p.addcmul_(g, self.neg_lr)  # param.add_(grad, alpha=-lr)
            return
        self.t += 1
        if self.decay is not None:
            if self.kind == "adamw":
                p.mul_(self.decay)
            else:
                g = _decayed(g, p, self.decay)
        beta1, beta2 = BETAS
        self.exp_avg.lerp_(g, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.t
        bias_correction2 = 1 - beta2 ** self.t
        neg_step = (-(self.lr / bias_correction1)).to(dtype=_opmath(p.dtype))
        denom = (self.exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(EPS)
        p.addcdiv_(self.exp_avg * neg_step, denom)  # param.addcdiv_(exp_avg, denom, value=-step_size)


class Clip:
    """`clip_grad_norm_` of each member's row (`clip_`) to its own `grad_clip`: one number when the members share
    it, else a column, the members without clipping scaled by exactly 1. `Clip.of(cfgs)` is None when no member
    clips."""

    def __init__(self, cfgs: list[ExperimentConfig], values: torch.Tensor) -> None:
        clips = [c.grad_clip for c in cfgs]
        self.max_norm: float | torch.Tensor = clips[0]
        self.clipped: torch.Tensor | None = None  # which members clip, where not all of them do
        if len(set(clips)) > 1:
            column = dict(dtype=_opmath(values.dtype), device=values.device)
            # a member that does not clip: 0, never used (`clipped` passes its row as it is)
            self.max_norm = torch.tensor([0.0 if c is None else c for c in clips], dtype=torch.float64
                                         ).view(-1, 1).to(**column)
            if None in clips:
                self.clipped = torch.tensor([c is not None for c in clips], device=values.device).view(-1, 1)

    @classmethod
    def of(cls, cfgs: list[ExperimentConfig], values: torch.Tensor) -> "Clip | None":
        return None if all(c.grad_clip is None for c in cfgs) else cls(cfgs, values)

    def __call__(self, grads: torch.Tensor, spans: list[tuple[int, int]]) -> None:
        clip_(grads, spans, self.max_norm, self.clipped)


@torch.no_grad()
def clip_(grads: torch.Tensor, spans: list[tuple[int, int]], max_norm: float | torch.Tensor,
          clipped: torch.Tensor | None = None) -> None:
    """`clip_grad_norm_` of each member's row: the norm of the per-parameter norms, scaled down to `max_norm` (a
    number, or a (members, 1) column); with `clipped` (a (members, 1) bool column) only those members' rows."""
    norms = torch.stack([torch.linalg.vector_norm(grads[:, a:b], dim=1) for a, b in spans], dim=1)
    total = torch.linalg.vector_norm(norms, dim=1, keepdim=True)
    # max_norm / x for a number is x.reciprocal() * max_norm (`Tensor.__rtruediv__`), as clip_grad_norm_ computes
    # it; a column (in the operation's dtype, `_opmath`) is divided the same way and rounded once to the norm's
    coef = torch.clamp((total + 1e-6).reciprocal().mul(max_norm).to(total.dtype) if isinstance(max_norm, torch.Tensor)
                       else max_norm / (total + 1e-6), max=1.0)
    grads.mul_(coef if clipped is None else torch.where(clipped, coef, 1.0))


def _decayed(g: torch.Tensor, p: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """grad.add(param, alpha=wd) with a column of weight decays (in the operation's dtype, `_opmath`): computed
    there and rounded once to the gradient's dtype, as with a number."""
    out = torch.addcmul(g, p, decay)
    return out if out.dtype == g.dtype else out.to(g.dtype)


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype torch computes an operation on `dtype` tensors in (float32 for 16-bit floats), in which it takes a
    Python number: the per-member factors' columns, so that a member's update rounds as its lone run's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
