"""The evidence several causes share, and the thresholds every cause rule is judged by (`core.analysis.causes`).

Each threshold is named for what it means; the comment says why it sits where it does.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from core.analysis.finding_types import layer_medians, num

UNSCALED_STD = 10.0  # a feature std this large, as the first layer sees it, is unscaled (default init assumes ~1)
PLATEAU_DROP = 0.1  # the exact training loss fell less than this share from the first epoch: a plateau
PLATEAU_LOSS = 0.2  # ... and ended above this (a run that learned everything in epoch 0 is no plateau)
STUCK_FRAC = 0.5  # a typical step left this share of parameters with a non-zero gradient unchanged
UNSTABLE_VAL_OSC = 1.0  # the validation loss travelled back and forth its own level at least once
UNSTABLE_TRAIN_OSC = 0.5  # ... and the training loss half of it,
UNSTABLE_SPIKES = 3  # ... or spiked this often, or ended above where it started
BIG_UPDATE = 0.05  # a typical step changes some layer's weights by 5% of their size: far past the usual 0.1-1%
WILD_MARGIN = -20.0  # a logit this far on the wrong side: the model swung to confident errors
FROZEN_LOGIT = 1e4  # a logit this large from unit-scale inputs: steps far too large (sigmoid saturates at 16.6;
# healthy runs of the catalogue stay under ~120)
SMALL_UPDATE = 1e-3  # every layer's typical step is under 0.1% of its weights: the usual 1e-3 rule of thumb
TARGET_UPDATE = 3e-3  # the relative update size a raised learning rate aims at
VANISH_RATIO = 0.05  # the first layer's gradient norm under 5% of the output layer's
DEEP = 4  # hidden layers from which vanishing gradients are looked for
DEAD_FINAL = 0.5  # half the ReLU units dead at the end
CLIP_RATIO = 10.0  # the typical gradient norm at least 10 times grad_clip: every step is clipped hard
STRONG_DECAY = 0.1  # weight decay from which a plateau is blamed on it
UNDERFIT_ACC = 0.75  # training accuracy under this with a plateau: the model cannot fit the data
OVERFIT_RISE = 0.25  # the validation loss ended 25% above its best ...
OVERFIT_ABOVE = 0.05  # ... and by at least 0.05 nats (0.001 to 0.01 is a tenfold rise of nothing)
OVERFIT_PROBLEM = 1.0  # ... a problem when it doubled
OVERFIT_PROBLEM_ABOVE = 0.1  # ... by at least 0.1 nats
OVERFIT_TRAIN_ACC = 0.9  # while the training accuracy is at least this
TAIL_DROP = 0.03  # the validation loss still fell 3% an epoch at the end ...
TAIL_FALL = 0.01  # ... and at least 0.01 nats an epoch,
TAIL_STEADY = 0.3  # ... and had not been swinging (a noisy curve's last epochs fall as often as they rise)
TINY_BATCH = 4  # BatchNorm on batches of at most this many samples
BN_MOMENTUM_HIGH = 0.5  # running statistics that follow the last batch this closely
LN2 = math.log(2)  # the exact loss of predicting 0.5 for every sample
IMBALANCED = 0.7  # the larger class holds at least this share of the validation samples
MAJORITY_SLACK = 0.01  # accuracy within this of the larger class's share: no better than predicting it always
CHANCE_AUC = 0.65  # ... with an AUC under this: the ranking of the samples is near chance (0.5)
NONLINEAR_DATASETS = ("circles", "moons", "xor")  # generated data that no straight line separates


def prior_loss(p: float) -> float:
    """The exact loss of predicting the positive share `p` for every sample (the labels' entropy, in nats)."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def majority(s: Mapping[str, Any]) -> tuple[float, str] | None:
    """The larger class's share of the validation samples and its name ("negative"/"positive"), if known."""
    p = num(s, "val_pos_frac")
    if p is None or not 0 <= p <= 1:
        return None
    return (1 - p, "negative") if p < 0.5 else (p, "positive")



def plateau(s: Mapping[str, Any]) -> bool:
    """The exact training loss barely fell and stayed high."""
    drop, final = num(s, "train_loss_drop"), num(s, "final_train_loss_logits")
    return drop is not None and drop < PLATEAU_DROP and (final is None or final > PLATEAU_LOSS)


def unstable(s: Mapping[str, Any]) -> bool:
    """The losses went up and down instead of down: the validation loss swung by its own level, and the
    training loss swung too, spiked, or ended above where it began."""
    val_osc = num(s, "val_loss_osc")
    if val_osc is None or val_osc < UNSTABLE_VAL_OSC:
        return False
    return ((num(s, "train_loss_osc") or 0) >= UNSTABLE_TRAIN_OSC or (num(s, "loss_spikes") or 0) >= UNSTABLE_SPIKES
            or (num(s, "train_loss_drop") or 0) < 0)


def evidence_of_instability(s: Mapping[str, Any]) -> str:
    parts = [f"the validation loss swung {num(s, 'val_loss_osc') or 0:.1f} times its level"]
    if num(s, "train_loss_osc") is not None:
        parts.append(f"the training loss {num(s, 'train_loss_osc'):.2f} times")
    if num(s, "loss_spikes"):
        parts.append(f"{int(num(s, 'loss_spikes'))} steps spiked")
    if (num(s, "train_loss_drop") or 0) < 0:
        parts.append("the training loss ended above where it started")
    return ", ".join(parts)


def largest_update(s: Mapping[str, Any]) -> tuple[str, float] | None:
    ratios = layer_medians(s, "update_ratio")
    return max(ratios.items(), key=lambda kv: kv[1]) if ratios else None


def lr_times(config: Mapping[str, Any], factor: float) -> dict[str, Any] | None:
    lr = config.get("lr")
    if not isinstance(lr, (int, float)) or lr <= 0:
        return None
    new = float(f"{lr * factor:.3g}")
    return {"lr": min(new, 10.0)} if new != lr else None
