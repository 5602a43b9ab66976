"""The two ways of computing binary cross-entropy that this tool compares.

`bce`: p = sigmoid(z) in the compute dtype, optionally clamped to [eps, 1 - eps], then `F.binary_cross_entropy`,
which clamps each log term at -100. Once sigmoid rounds to exactly 0 or 1 (float32: z > ~16.6 or z < ~-88.7) a
wrong prediction costs 100 and its gradient is zero.
`bce_with_logits`: `F.binary_cross_entropy_with_logits` on z, exact for every z, gradient sigmoid(z) - y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.experiment.config import ExperimentConfig


def probabilities(z: torch.Tensor, clamp_eps: float | None = None) -> torch.Tensor:
    p = torch.sigmoid(z)
    # sigmoid(NaN) is NaN, and BCELoss rejects NaN input with an error (a device-side assert on CUDA). A NaN
    # logit already marks the step as diverged, so feed 0.5 instead of crashing and let the trainer report it.
    p = torch.nan_to_num(p, nan=0.5)
    if clamp_eps is not None:
        p = p.clamp(clamp_eps, 1.0 - clamp_eps)
    return p


def sample_weights(y: torch.Tensor, pos_weight: float) -> torch.Tensor | None:
    if pos_weight == 1.0:
        return None
    return 1.0 + (pos_weight - 1.0) * y


def bce_loss(z: torch.Tensor, y: torch.Tensor, *, clamp_eps: float | None = None, pos_weight: float = 1.0,
             reduction: str = "mean") -> torch.Tensor:
    """Sigmoid then `nn.BCELoss` (with `pos_weight` as a per-sample weight on positives)."""
    return F.binary_cross_entropy(probabilities(z, clamp_eps), y, weight=sample_weights(y, pos_weight),
                                  reduction=reduction)


def logits_loss(z: torch.Tensor, y: torch.Tensor, *, pos_weight: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """`nn.BCEWithLogitsLoss` on the pre-sigmoid values."""
    pw = None if pos_weight == 1.0 else torch.tensor(pos_weight, dtype=z.dtype, device=z.device)
    return F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction=reduction)


def loss_fn(cfg: ExperimentConfig, reduction: str = "mean"):
    """The loss the config optimises, as a function (z, y) -> a scalar (or per-element values with
    `reduction="none"`)."""
    if cfg.loss == "bce":
        return lambda z, y: bce_loss(z, y, clamp_eps=cfg.clamp_eps, pos_weight=cfg.pos_weight, reduction=reduction)
    return lambda z, y: logits_loss(z, y, pos_weight=cfg.pos_weight, reduction=reduction)
