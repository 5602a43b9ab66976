"""SGD, Adam and AdamW over a population's stacked parameters, with a learning rate and weight decay per member.

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
    def __init__(self, cfgs: list[ExperimentConfig], values: torch.Tensor, grads: torch.Tensor) -> None:
        self.kind = cfgs[0].optimizer
        self.momentum = cfgs[0].momentum
        self.values, self.grads = values, grads
        lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64).view(-1, 1)
        wd = torch.tensor([c.weight_decay for c in cfgs], dtype=torch.float64).view(-1, 1)
        column = dict(dtype=values.dtype, device=values.device)
        self.neg_lr = (-lr).to(**column)
        self.decay = None if not wd.any() else wd.to(**column)
        if self.kind == "adamw" and self.decay is not None:
            self.decay = (1 - lr * wd).to(**column)  # decoupled: param *= 1 - lr * wd
        # the learning rates in float64 where the parameters are (MPS has no float64): the step size is computed
        # there each step, with no transfer from the host
        self.lr = lr.to(device=values.device) if values.device.type != "mps" else lr.float().to(values.device)
        self.buf: torch.Tensor | None = None  # SGD momentum
        self.exp_avg = torch.zeros_like(values) if self.kind != "sgd" else None
        self.exp_avg_sq = torch.zeros_like(values) if self.kind != "sgd" else None
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        g, p = self.grads, self.values
        if self.kind == "sgd":
            if self.decay is not None:
                g = torch.addcmul(g, p, self.decay)  # grad.add(param, alpha=wd)
            if self.momentum != 0:
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
                g = torch.addcmul(g, p, self.decay)
        beta1, beta2 = BETAS
        self.exp_avg.lerp_(g, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.t
        bias_correction2 = 1 - beta2 ** self.t
        neg_step = (-(self.lr / bias_correction1)).to(dtype=p.dtype)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(EPS)
        p.addcdiv_(self.exp_avg * neg_step, denom)  # param.addcdiv_(exp_avg, denom, value=-step_size)


@torch.no_grad()
def clip_(grads: torch.Tensor, spans: list[tuple[int, int]], max_norm: float) -> None:
    """`clip_grad_norm_` of each member's row: the norm of the per-parameter norms, scaled down to `max_norm`."""
    norms = torch.stack([torch.linalg.vector_norm(grads[:, a:b], dim=1) for a, b in spans], dim=1)
    total = torch.linalg.vector_norm(norms, dim=1, keepdim=True)
    grads.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
