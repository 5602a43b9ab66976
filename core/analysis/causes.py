"""Root causes: rules that read a run's config and summary and name why its loss misbehaved, with the evidence
and the config change that removes the cause.

`cause_findings` runs the rules in order of precedence: a cause that explains another's evidence comes first (a
ReLU before the sigmoid explains a plateau; unscaled inputs explain saturation; a frozen BatchNorm explains a
validation loss that rises). Each rule reads numbers the trainer put in the summary (`core.training.summary`,
`core.training.curves`), so all of them together cost microseconds. Thresholds are module constants, named
for what they mean, in `core.analysis.evidence` with the evidence several rules share; tests/test_causes.py
checks both sides of each. The rules on the data and the fit (random labels, unscaled inputs, a linear model,
the majority class, overfitting, too few steps) are in `core.analysis.fit_causes`; this module runs them all.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from core.analysis.evidence import (BIG_UPDATE, BN_MOMENTUM_HIGH, CLIP_RATIO, DEAD_FINAL, DEEP, FROZEN_LOGIT, LN2,
                                    SMALL_UPDATE, STRONG_DECAY, STUCK_FRAC, TARGET_UPDATE, TINY_BATCH, UNSCALED_STD,
                                    VANISH_RATIO, WILD_MARGIN, evidence_of_instability, largest_update, lr_times,
                                    plateau, unstable)
from core.analysis.finding_types import SATURATES_AT, Finding, layer_medians, num, pct
from core.analysis.fit_causes import (FEW_STEPS, LINEAR, MAJORITY, NO_NONLINEARITY, OVERFITTING, RANDOM_LABELS,
                                      UNSCALED, few_steps, majority_class, overfitting, random_labels,
                                      underfit, unscaled_inputs)

RELU_SIGMOID = "a ReLU before the sigmoid"
LR_HIGH = "learning rate too high"
LR_LOW = "learning rate too low"
MOMENTUM = "momentum too high"
FLOAT16_OVERFLOW = "float16 overflow"
FLOAT16_ADAM = "Adam's denominator rounds to 0 in float16"
ROUNDED_AWAY = "updates below the dtype's precision"
HALF_SATURATION = "half-precision saturation"
SATURATION = "sigmoid saturation under BCELoss's clamp"
CLAMP_EPS = "clamp_eps too large"
BN_FROZEN = "BatchNorm running statistics never updated"
BN_MOMENTUM = "BatchNorm momentum too high"
BN_TINY = "BatchNorm with tiny batches"
WEIGHT_DECAY = "weight decay too strong"
CLIP = "gradient clipping too tight"
VANISHING = "vanishing gradients"
DEAD_RELU = "dead ReLUs"

CAUSES = (RELU_SIGMOID, RANDOM_LABELS, UNSCALED, FLOAT16_ADAM, FLOAT16_OVERFLOW, MOMENTUM, LR_HIGH, ROUNDED_AWAY,
          HALF_SATURATION, SATURATION, CLAMP_EPS, BN_FROZEN, BN_MOMENTUM, BN_TINY, WEIGHT_DECAY, CLIP, VANISHING,
          DEAD_RELU, LR_LOW, LINEAR, NO_NONLINEARITY, MAJORITY, OVERFITTING, FEW_STEPS)

Rule = Callable[[Mapping[str, Any], Mapping[str, Any], str], "Finding | None"]


def cause_findings(config: Mapping[str, Any], summary: Mapping[str, Any], *, status: str) -> list[Finding]:
    """Every cause whose evidence is in the summary, in order of precedence (see the module docstring)."""
    out = []
    for rule in RULES:
        found = rule(config, summary, status)
        if found is not None:
            out.append(found)
    return out


# ---------------------------------------------------------------------- the rules, in order of precedence
def relu_before_sigmoid(config, s, status) -> Finding | None:
    if not config.get("output_relu"):
        return None
    low, lowest = num(s, "min_pred_pos_rate"), num(s, "min_val_logit")
    title = ("Every prediction is ≥ 0.5: a ReLU before the sigmoid." if low is None or low >= 1.0 else
             "A ReLU before the sigmoid floors every probability at 0.5.")
    reach = (f" The head's lowest validation logit over the whole run was {lowest:.3g}: it can never reach the "
             "negative targets." if lowest is not None else "")
    return Finding("problem", title,
                   "ReLU makes every pre-sigmoid value ≥ 0, so sigmoid gives ≥ 0.5 and no sample can be predicted "
                   "negative. For a negative the best reachable loss is ln 2 ≈ 0.69, where the ReLU's gradient is "
                   f"exactly zero; on balanced data the mean loss cannot fall below about 0.35.{reach} Remove "
                   "output_relu and feed raw logits to bce_with_logits.",
                   cause=RELU_SIGMOID, fix={"output_relu": False})


def diverged(config, s, status) -> Finding | None:
    if status != "diverged":
        return None
    step, layer, where = s.get("diverged_step"), s.get("nonfinite_layer"), s.get("nonfinite_in")
    located = ""
    if layer:
        located = {"forward": f" The first non-finite value came out of layer {layer} in the forward pass.",
                   "gradient": f" The first non-finite value was layer {layer}'s gradient (or its norm).",
                   "update": f" Layer {layer}'s weights became non-finite in the update."}.get(where, "")
    grad = num(s, "median_grad_norm")
    grown = f" The typical gradient norm was {grad:.3g}." if grad is not None else ""
    title = f"Training diverged at step {step}: a loss, logit or gradient became NaN or infinite."
    if config.get("dtype") == "float16" and where == "update" and config.get("optimizer") in ("adam", "adamw"):
        return Finding("problem", title, "Adam divides each step by √v + eps, v being the gradient's running square. "
                                         "In float16 its eps (1e-8) rounds to 0, and so does v's first term, "
                                         "0.001 × g², for any gradient under about 0.005: the update divides by "
                                         f"zero and the weights become infinite, with finite gradients.{located}"
                                         f"{grown} Train in float32 (or bfloat16, whose range holds them).",
                       cause=FLOAT16_ADAM, fix={"dtype": "float32"})
    if config.get("dtype") == "float16" and where == "gradient" and config.get("loss", "bce") == "bce":
        return Finding("problem", title, "In float16 sigmoid rounds to exactly 1 above z ≈ "
                                         f"{SATURATES_AT['float16']}. BCELoss's backward divides by p·(1 − p), "
                                         "guarded by 1e-12, which is 0 in float16: an output that confident gets "
                                         "a gradient of 0/0 or 1/0, NaN or infinite (and near p = 0, 1/p passes "
                                         f"float16's largest number, 65,504).{located}{grown} Train in float32, "
                                         "or keep float16 with loss=bce_with_logits, whose gradient σ(z) − y "
                                         "stays finite.", cause=FLOAT16_OVERFLOW, fix={"dtype": "float32"})
    if config.get("dtype") == "float16" and where in ("forward", "gradient"):
        return Finding("problem", title, "float16 holds numbers only up to 65,504: an activation or a gradient past "
                                         f"that is infinite.{located}{grown} Train in float32 (or bfloat16, which "
                                         "has float32's range).", cause=FLOAT16_OVERFLOW, fix={"dtype": "float32"})
    if config.get("optimizer") == "sgd" and (config.get("momentum") or 0) >= 0.99:
        return Finding("problem", title, f"SGD momentum {config.get('momentum')} keeps adding up past steps for "
                                         f"hundreds of steps, so the weights overshoot and blow up.{located}{grown} "
                                         "A momentum of 0.9 forgets in about ten steps.",
                       cause=MOMENTUM, fix={"momentum": 0.9})
    return Finding("problem", title, f"Each step overshot and the next one overshot more.{located}{grown} Lower the "
                                     "learning rate (or clip gradients with grad_clip).",
                   cause=LR_HIGH, fix=lr_times(config, 0.1))


def rounded_away(config, s, status) -> Finding | None:
    stuck = num(s, "median_stuck_update_frac")
    zero, steps = s.get("zero_update_steps"), s.get("steps") or 0
    every = isinstance(zero, int) and steps and zero == steps
    if (stuck is None or stuck < STUCK_FRAC) and not every:
        return None
    dtype = config.get("dtype", "float32")
    share = f"a typical step left {pct(stuck)} of the parameters with a non-zero gradient unchanged" \
        if stuck is not None else f"the optimizer changed nothing on {zero} of {steps} steps"
    half = dtype in ("float16", "bfloat16")
    return Finding("problem", "The optimizer's updates round away: the weights do not move although the gradients "
                              "are not zero.",
                   f"In {dtype}, {share}: lr × gradient is smaller than the gap between neighbouring {dtype} "
                   "numbers near each weight, so the sum rounds back to the old weight"
                   + (" (bfloat16 keeps 8 significant bits, float16 11)." if half else ".")
                   + (" Train in float32." if half else " Raise the learning rate."),
                   cause=ROUNDED_AWAY, fix={"dtype": "float32"} if half else lr_times(config, 10.0))


def thrown_and_frozen(config, s, status) -> Finding | None:
    """Steps so large that the logits left any sensible range, then BCELoss's clamp froze every gradient: the loss
    ends flat and high, which reads like saturation (it is, afterwards) or a rate too low (the steps are zero)."""
    scale, peak, grad = num(s, "input_std_max"), num(s, "peak_logit_abs_max"), num(s, "median_grad_norm")
    rose = -(num(s, "train_loss_drop") or 0)  # how far the exact training loss ended above its first epoch's
    unscaled = scale is not None and scale >= UNSCALED_STD and not config.get("standardize", True)
    if unscaled or peak is None or peak < FROZEN_LOGIT or grad != 0 or rose <= 0:
        return None
    dtype, (cost, _) = config.get("dtype", "float32"), wrong_cost(config)
    evidence = (f"With inputs at unit scale the logits reached {peak:.3g} (sigmoid saturates at "
                f"{SATURATES_AT.get(dtype, 16.6)} in {dtype}): only steps far too large get there. Then sigmoid "
                f"rounds to 0 or 1, BCELoss charges the wrong ones {cost} with zero gradient, and nothing moves "
                "again: the typical gradient norm is 0 and the exact training loss "
                f"ended {rose:.0%} above its first epoch's. bce_with_logits alone keeps a gradient, but with steps "
                "this large it diverges instead.")
    momentum = config.get("momentum") or 0
    if config.get("optimizer") == "sgd" and momentum >= 0.99:
        return Finding("problem", f"SGD momentum {momentum} threw the logits to {peak:.3g} and training froze.",
                       evidence + " A momentum of 0.9 forgets in about ten steps.", cause=MOMENTUM,
                       fix={"momentum": 0.9})
    return Finding("problem", f"The learning rate is too high: its steps threw the logits to {peak:.3g} and "
                              f"training froze (lr = {config.get('lr')}).",
                   evidence + " A tenth of the learning rate usually settles it.", cause=LR_HIGH,
                   fix=lr_times(config, 0.1))


def half_precision_saturation(config, s, status) -> Finding | None:
    dtype, wrong = config.get("dtype", "float32"), num(s, "peak_clamp_wrong_frac")
    margin = num(s, "min_margin")
    if dtype not in ("float16", "bfloat16") or config.get("loss", "bce") != "bce" or not wrong or margin is None:
        return None
    if margin <= -SATURATES_AT["float32"]:
        return None  # float32 would have clamped these too: the loss, not the dtype, is the cause
    return Finding("problem", f"{pct(wrong)} of outputs were clamped on the wrong side, by logits that float32 "
                              "would still have represented.",
                   f"sigmoid rounds to exactly 1 above z ≈ {SATURATES_AT[dtype]} in {dtype} (16.6 in float32). The "
                   f"most wrong margin y·z of the run was {margin:.3g}: past {dtype}'s threshold, not float32's. A "
                   f"confident wrong prediction then costs {wrong_cost(config)[0]} with zero gradient under "
                   "BCELoss. Train in float32.",
                   cause=HALF_SATURATION, fix={"dtype": "float32"})


def wrong_cost(config: Mapping[str, Any]) -> tuple[str, str]:
    """What BCELoss charges an output saturated on the wrong side ("100", or "15.9 to 16.1"), and how it comes
    about: its clamp of log 0 at -100, or with clamp_eps the probability clamped into [eps, 1 - eps] first, in
    the compute dtype, where 1 - eps rounds (float32 holds 1 - 1e-7 as 1 - 1.19e-7: a negative at p = 1 costs
    15.9, a positive at p = 0 costs -ln 1e-7 = 16.1)."""
    eps = config.get("clamp_eps")
    if not (isinstance(eps, (int, float)) and 0 < eps < 1):
        return "100", "BCELoss then clamps log(0) at -100: such a prediction costs 100"
    dtype = config.get("dtype", "float32")
    top, bottom = _rounded(1.0 - eps, dtype), _rounded(eps, dtype)
    costs = sorted({f"{min(100.0, _rounded(-math.log(q), dtype)):.3g}" for q in (1.0 - top, bottom) if q > 0}
                   or {"100"}, key=float)
    cost = " to ".join(costs)
    return cost, (f"clamp_eps = {eps:g} first clamps the probability into [{eps:g}, 1 - {eps:g}] (in {dtype}): "
                  f"such a prediction costs {cost}")


def _rounded(x: float, dtype: str) -> float:
    """`x` rounded to `dtype` as a tensor of it holds it (bfloat16: float32's top 16 bits, to nearest even)."""
    if dtype == "bfloat16":
        bits = int(np.float32(x).view(np.uint32))
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return float(np.uint32(bits).view(np.float32))
    return float(np.dtype(dtype).type(x)) if dtype in ("float16", "float32", "float64") else x


def saturation(config, s, status) -> Finding | None:
    wrong = num(s, "peak_clamp_wrong_frac")
    if not wrong or config.get("loss", "bce") != "bce":
        return None
    dtype, margin = config.get("dtype", "float32"), num(s, "min_margin")
    reached = f" The most wrong margin y·z of the run was {margin:.3g}." if margin is not None else ""
    cost, how = wrong_cost(config)
    return Finding("problem", f"Up to {pct(wrong)} of a batch's outputs were clamped on the wrong side: each costs "
                              f"{cost} and passes no gradient.",
                   f"sigmoid rounds to exactly 1 above z ≈ {SATURATES_AT.get(dtype, 16.6)} in {dtype} (and to 0 "
                   f"below about -88.7 in float32).{reached} {how} and gets no gradient of its own, so only the "
                   "other samples' gradients can move it back. bce_with_logits stays exact and keeps the gradient "
                   "sigmoid(z) - y.", cause=SATURATION,
                   fix={"loss": "bce_with_logits", **({"clamp_eps": None} if config.get("clamp_eps") else {})})


def clamp_eps(config, s, status) -> Finding | None:
    eps = num(s, "peak_eps_clamp_frac")
    if not eps or eps < 0.01 or not config.get("clamp_eps"):
        return None
    return Finding("warning", f"Up to {pct(eps)} of probabilities fell outside [eps, 1 - eps] and were clamped: no "
                              "gradient flows through them.",
                   f"clamp_eps = {config.get('clamp_eps')} bounds the loss but also stops learning on every sample "
                   "the model is already fairly sure of, right or wrong. BCELoss's own clamp at -100 is enough; "
                   "bce_with_logits needs none.", cause=CLAMP_EPS, fix={"clamp_eps": None})


def _val_gap(s: Mapping[str, Any]) -> str:
    val, train = num(s, "final_val_loss_logits"), num(s, "final_train_loss_logits")
    acc, train_acc = num(s, "final_val_acc"), num(s, "final_train_acc")
    parts = []
    if val is not None and train is not None:
        parts.append(f"final exact loss {train:.3g} in training, {val:.3g} on validation")
    if acc is not None and train_acc is not None:
        parts.append(f"accuracy {train_acc:.0%} in training, {acc:.0%} on validation")
    return "; ".join(parts)


def batchnorm(config, s, status) -> Finding | None:
    if not config.get("batchnorm") or not config.get("hidden"):
        return None
    momentum, batch = config.get("bn_momentum", 0.1), config.get("batch_size", 32)
    gap = _val_gap(s)
    evidence = f" ({gap})" if gap else ""
    if momentum == 0:
        return Finding("problem", "BatchNorm's running statistics never moved (bn_momentum = 0): evaluation "
                                  "normalises with mean 0 and variance 1.",
                       "Training normalises each batch with its own statistics, validation with running ones that "
                       f"stay at their initial values, so the two see different networks{evidence}. "
                       "bn_momentum=0.1 lets them follow the data.", cause=BN_FROZEN, fix={"bn_momentum": 0.1})
    if momentum >= BN_MOMENTUM_HIGH:
        return Finding("warning", f"BatchNorm's running statistics follow the last batch (bn_momentum = {momentum}).",
                       f"Evaluation normalises with the statistics of the last batch or two of {batch} samples, "
                       f"which move with every batch{evidence}. bn_momentum=0.1 averages about ten batches.",
                       cause=BN_MOMENTUM, fix={"bn_momentum": 0.1})
    if batch <= TINY_BATCH:
        return Finding("warning", f"BatchNorm normalises batches of {batch} samples: its statistics are noise.",
                       f"The mean and variance of {batch} samples change wildly from batch to batch, so training "
                       f"sees a different network each step and evaluation a third one{evidence}. Batches of 32 or "
                       "more (or no BatchNorm) fix it.", cause=BN_TINY, fix={"batch_size": 32})
    return None


def weight_decay(config, s, status) -> Finding | None:
    decay = config.get("weight_decay") or 0
    if decay < STRONG_DECAY or not plateau(s):
        return None
    pos = num(s, "final_val_pred_pos_rate")
    collapse = f" At the end {pos:.0%} of validation samples are predicted positive." if pos is not None else ""
    return Finding("problem", f"Weight decay {decay:g} holds every weight near zero: the loss stayed on a plateau.",
                   f"The exact training loss fell only {pct(max(num(s, 'train_loss_drop') or 0, 0))} from the first "
                   f"epoch.{collapse} A decay this strong outweighs the loss's gradient, so the model predicts little "
                   "more than the class prior. Typical values are 1e-4 to 1e-2.",
                   cause=WEIGHT_DECAY, fix={"weight_decay": 0.0})


def clipping(config, s, status) -> Finding | None:
    """SGD's step is lr times the gradient, so clipping the gradient shrinks it. Adam's is m / √v, which scaling
    every gradient alike leaves as it was: clipping does not slow Adam down, and the rule says nothing there."""
    clip, grad = config.get("grad_clip"), num(s, "median_grad_norm")
    if config.get("optimizer", "sgd") != "sgd":
        return None
    if not clip or grad is None or grad < CLIP_RATIO * clip or not plateau(s):
        return None
    return Finding("problem", f"Gradient clipping at {clip:g} shrinks every step: the typical gradient norm is "
                              f"{grad:.3g}, {grad / clip:,.0f} times larger.",
                   f"Clipping scales each step down to norm {clip:g}, so the learning rate is in effect "
                   f"{grad / clip:,.0f} times smaller and the loss stayed on a plateau. Clip at a norm above the "
                   "typical one (or not at all).", cause=CLIP, fix={"grad_clip": None})


def momentum_too_high(config, s, status) -> Finding | None:
    momentum = config.get("momentum") or 0
    if config.get("optimizer") != "sgd" or momentum < 0.99 or not unstable(s):
        return None
    return Finding("problem", f"SGD momentum {momentum} makes the loss swing: {evidence_of_instability(s)}.",
                   "With momentum m a step keeps adding up the last 1/(1-m) gradients: at 0.99 and above the "
                   "weights overshoot for hundreds of steps before they turn. 0.9 is the usual value.",
                   cause=MOMENTUM, fix={"momentum": 0.9})


def lr_too_high(config, s, status) -> Finding | None:
    """The loss swings, with big steps or wild logits; or, where it fell steadily, it fell from so high that it
    ended worse than predicting 0.5 for every sample, with big steps and wild logits (Adam at lr 90: its steps
    are about lr each, so the logits reach millions and the loss falls for ever from there)."""
    largest, margin = largest_update(s), num(s, "min_margin")
    big = largest is not None and largest[1] >= BIG_UPDATE
    wild = margin is not None and margin <= WILD_MARGIN
    val, peak = num(s, "final_val_loss_logits"), num(s, "peak_logit_abs_max")
    if not unstable(s):
        if not (big and wild and val is not None and val > LN2 and status == "finished"):
            return None
        return Finding("problem", f"The learning rate is too high: its steps threw the logits to "
                                  f"{peak if peak is not None else -margin:.3g} and the exact validation loss ended "
                                  f"at {val:.3g}, worse than predicting 0.5 for every sample ({LN2:.3f}) (lr = "
                                  f"{config.get('lr')}).",
                       f"A typical step changed layer {largest[0]}'s weights by {largest[1]:.0%} of their size, and "
                       f"a logit reached {margin:.3g} on the wrong side. The loss falls because it started so high, "
                       "not because the model learned. A tenth of the learning rate usually settles it.",
                       cause=LR_HIGH, fix=lr_times(config, 0.1))
    if not big and not wild:
        return None
    evidence = [evidence_of_instability(s)]
    if big:
        evidence.append(f"a typical step changed layer {largest[0]}'s weights by {largest[1]:.0%} of their size")
    if wild:
        evidence.append(f"a logit reached {margin:.3g} on the wrong side")
    return Finding("problem", f"The learning rate is too high: the loss goes up and down instead of down (lr = "
                              f"{config.get('lr')}).",
                   "; ".join(evidence).capitalize() + ". Steps that large jump across the valley instead of into "
                   "it. A tenth of the learning rate usually settles it.", cause=LR_HIGH,
                   fix=lr_times(config, 0.1))


def vanishing(config, s, status) -> Finding | None:
    hidden = config.get("hidden") or ()
    norms = layer_medians(s, "grad_norm")
    if len(hidden) < DEEP or not plateau(s) or "fc0" not in norms or not norms.get("out"):
        return None
    ratio = norms["fc0"] / norms["out"]
    if ratio >= VANISH_RATIO:
        return None
    act = config.get("activation")
    return Finding("problem", f"The gradient vanishes on its way down {len(hidden)} hidden layers: the first layer "
                              f"gets {ratio:.2g} times the output layer's gradient.",
                   f"Typical gradient norms: fc0 {norms['fc0']:.2g}, out {norms['out']:.2g}. Each {act} layer "
                   "shrinks the signal a little, and through this many the first layers barely learn, so the loss "
                   "stayed on a plateau. BatchNorm keeps each layer's inputs at unit scale (so does a shallower "
                   "model, or ReLU-like activations with their initialisation).",
                   cause=VANISHING, fix={"batchnorm": True})


def dead_relus(config, s, status) -> Finding | None:
    dead = num(s, "final_dead_relu_frac")
    if dead is None or dead < DEAD_FINAL or not config.get("hidden") or config.get("activation") != "relu":
        return None
    severity = "problem" if plateau(s) else "warning"
    init = config.get("hidden_bias_init")
    negative_init = isinstance(init, (int, float)) and init < 0
    why = (f"Every hidden bias started at {init:g}, below every unit's input, so the units were dead from the first "
           "step; the default initialisation (or 0) starts them alive." if negative_init else
           "Large steps push a unit's bias far negative. ELU (or leaky_relu) keeps a gradient below zero.")
    return Finding(severity, f"{pct(dead)} of the ReLU units are dead at the end: zero for every sample of a batch.",
                   "A dead unit passes no gradient, so nothing revives it; with most units dead the network is a "
                   "much smaller one" + (" and the loss stayed on a plateau" if plateau(s) else "") + ". " + why,
                   cause=DEAD_RELU, fix={"hidden_bias_init": None} if negative_init else {"activation": "elu"})


def lr_too_low(config, s, status) -> Finding | None:
    largest = largest_update(s)
    if largest is None or largest[1] >= SMALL_UPDATE or not plateau(s):
        return None
    if largest[1] <= 0 or num(s, "median_grad_norm") == 0:
        return None  # no gradient (saturation, dead units): no learning rate moves the weights
    factor = 10 ** max(1, round(math.log10(TARGET_UPDATE / largest[1])))
    fix = lr_times(config, factor)
    if fix is None or fix["lr"] <= (config.get("lr") or 0):
        return None  # already at the largest rate proposed: the steps are small for another reason
    return Finding("problem", f"The learning rate is too low: a typical step changes the weights by "
                              f"{largest[1]:.2g} of their size at most (layer {largest[0]}).",
                   f"The exact training loss fell {pct(max(num(s, 'train_loss_drop') or 0, 0))} from the first "
                   f"epoch. Steps under 0.1% of the weights (lr = {config.get('lr')}) need thousands of epochs; "
                   f"{factor:g} times the learning rate brings them near 0.3%.",
                   cause=LR_LOW, fix=fix)


RULES: tuple[Rule, ...] = (relu_before_sigmoid, random_labels, unscaled_inputs, diverged, rounded_away,
                           thrown_and_frozen, half_precision_saturation, saturation, clamp_eps, batchnorm,
                           weight_decay, clipping, momentum_too_high, lr_too_high, vanishing, dead_relus, lr_too_low,
                           underfit, majority_class, overfitting, few_steps)
