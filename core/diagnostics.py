"""What the loss is doing, measured per optimizer step and per epoch.

Step diagnostics are computed on the training device and returned as 0-d tensors: the trainer stacks them and
fetches them to the host once per flush, so the step loop never waits on the GPU. Metric keys are part of the
contract with the store and the dashboard:

- `clamp_frac`: share of outputs whose sigmoid is exactly 0 or 1 in the compute dtype.
- `clamp_wrong_frac`: share of all outputs clamped on the wrong side (sigmoid 1 for a negative, 0 for a positive):
  BCELoss charges them 100 and gives them zero gradient.
- `eps_clamp_frac`: share of probabilities outside [eps, 1 - eps], when `clamp_eps` is set.
- `grad_vanish_frac`: share of samples whose gradient with respect to the pre-sigmoid value z is under 1% of
  |sigmoid(z) - y|, the gradient the exact loss would give.
- `logit_mean`, `logit_std`, `logit_abs_max`, `pred_pos_rate` (share with sigmoid(z) >= 0.5, i.e. z >= 0).
- `train_loss_logits`: BCEWithLogitsLoss on the same z, the exact loss; the gap to `train_loss` is the clamping.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from core.losses import logits_loss, sample_weights

VANISH_RATIO = 0.01


def exact_dtype(z: torch.Tensor) -> torch.Tensor:
    """z in at least float32, for reference values that must not inherit half precision's rounding."""
    return z if z.dtype == torch.float64 else z.float()


def output_diagnostics(z: torch.Tensor, y: torch.Tensor, *, loss: str, clamp_eps: float | None = None,
                       pos_weight: float = 1.0, z_grad: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Diagnostics of one batch of pre-sigmoid values `z` (compute dtype) against targets `y`.

    `z_grad` is the gradient of the mean batch loss with respect to z (from `z.retain_grad()`); without it,
    `grad_vanish_frac` is left out.
    """
    z = z.detach()
    p = torch.sigmoid(z)  # in the compute dtype: that is where it rounds to exactly 0 or 1
    at_one, at_zero = p == 1, p == 0
    zx, yx = exact_dtype(z), exact_dtype(y.detach())
    out: dict[str, torch.Tensor] = {
        "train_loss_logits": logits_loss(zx, yx, pos_weight=pos_weight),
        "clamp_frac": (at_one | at_zero).float().mean(),
        "clamp_wrong_frac": ((at_one & (y == 0)) | (at_zero & (y == 1))).float().mean(),
        "logit_mean": zx.mean(),
        "logit_std": zx.std() if z.numel() > 1 else torch.zeros((), device=z.device),
        "logit_abs_max": zx.abs().max(),
        "pred_pos_rate": (z >= 0).float().mean(),
    }
    if loss == "bce" and clamp_eps is not None:
        out["eps_clamp_frac"] = ((p < clamp_eps) | (p > 1 - clamp_eps)).float().mean()
    if z_grad is not None:
        out["grad_vanish_frac"] = grad_vanish_frac(zx, yx, z_grad, pos_weight=pos_weight)
    return {k: v.float() for k, v in out.items()}


def grad_vanish_frac(z: torch.Tensor, y: torch.Tensor, z_grad: torch.Tensor, *, pos_weight: float = 1.0) -> torch.Tensor:
    """Share of samples whose loss gradient w.r.t. z is under 1% of the exact |sigmoid(z) - y|.

    `z_grad` comes from a mean-reduced loss, so each sample's own gradient is n * z_grad / weight.
    """
    n = z.numel()
    g = exact_dtype(z_grad.detach()) * n
    w = sample_weights(y, pos_weight)
    if w is not None:
        g = g / w
    reference = (torch.sigmoid(z) - y).abs()
    return (g.abs() < VANISH_RATIO * reference).float().mean()


def dead_relu_frac(relu_outputs: list[torch.Tensor], z: torch.Tensor | None = None) -> torch.Tensor:
    """Share of ReLU units that output zero for every sample of the batch.

    `relu_outputs` are the hidden ReLU layers' (batch, width) outputs; `z`, when the model has the article's
    output ReLU, counts as one more unit (dead when every z in the batch is 0).
    """
    dead = [(h == 0).all(dim=0).sum() for h in relu_outputs]
    units = sum(h.shape[1] for h in relu_outputs)
    if z is not None:
        dead.append((z == 0).all().long())
        units += 1
    return torch.stack(dead).sum().float() / units


def grad_norms(named_layers: list[tuple[str, torch.nn.Module]]) -> dict[str, torch.Tensor]:
    """`grad_norm` (all parameters) and `grad_norm/<layer>` for each parametrised layer."""
    out: dict[str, torch.Tensor] = {}
    squares = []
    for name, module in named_layers:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            continue
        sq = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
        squares.append(sq)
        out[f"grad_norm/{name}"] = sq.sqrt()
    out["grad_norm"] = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
    return {"grad_norm": out.pop("grad_norm"), **out}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half. NaN with one class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0 or not np.isfinite(scores).all():
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def batchnorm_stats(batchnorms: list[tuple[str, torch.nn.BatchNorm1d]]) -> dict[str, torch.Tensor]:
    """Per BatchNorm layer: smallest running variance and largest absolute running mean."""
    out: dict[str, torch.Tensor] = {}
    for name, bn in batchnorms:
        out[f"bn_min_running_var/{name}"] = bn.running_var.detach().float().min()
        out[f"bn_max_abs_running_mean/{name}"] = bn.running_mean.detach().float().abs().max()
    return out


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
