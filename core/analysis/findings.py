"""Plain-language findings from a run's config, summary and status: what went wrong with the loss, and why.

Each rule reads the stored summary (the trainer's peaks, finals and counts), so a finding costs nothing to compute
and is the same in the dashboard, the command line and an exported report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

SEVERITIES = ("problem", "warning", "info", "good")
# Smallest logit whose sigmoid rounds to exactly 1 (see core.diagnostics.saturation_logits).
SATURATES_AT = {"float32": 16.6, "float64": 36.7, "float16": 8.3, "bfloat16": 6.25}


@dataclass(frozen=True)
class Finding:
    severity: str  # one of SEVERITIES
    title: str  # one sentence, with the number
    detail: str  # why it happens and what to try
    cause: str = ""  # the root cause in a few words ("unscaled inputs"); "" for a symptom with no cause named
    fix: dict[str, Any] | None = None  # the config change that removes the cause, e.g. {"standardize": True}

    def to_dict(self) -> dict[str, Any]:
        """What `show --json` prints: severity, title, detail, cause, fix."""
        return {"severity": self.severity, "title": self.title, "detail": self.detail, "cause": self.cause,
                "fix": dict(self.fix) if self.fix else None}


# A feature standard deviation at least this large, as the first layer sees it, is unscaled input: with default
# initialisation the first pre-activations then start tens or hundreds of units from zero.
UNSCALED_STD = 10.0


def _num(summary: Mapping[str, Any], key: str) -> float | None:
    value = summary.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.2g}%"


def findings(run) -> list[Finding]:
    """Findings for a stored `Run` (anything with config, summary, status and error)."""
    return findings_for(run.config, run.summary, status=run.status, error=run.error)


def findings_for(config: Mapping[str, Any], summary: Mapping[str, Any], *, status: str,
                 error: str | None = None) -> list[Finding]:
    out: list[Finding] = []
    loss = config.get("loss", "bce")
    dtype = config.get("dtype", "float32")
    steps = summary.get("steps") or 0

    scale, largest = _num(summary, "input_std_max"), _num(summary, "input_abs_max")
    if scale is not None and scale >= UNSCALED_STD and not config.get("standardize", True):
        saturated = bool(_num(summary, "peak_clamp_frac")) or (_num(summary, "logit_abs_max") or 0) > 16
        if config.get("batchnorm") and not saturated:
            severity = "info"
        else:
            severity = "problem" if saturated or status == "diverged" else "warning"
        out.append(Finding(
            severity, f"The inputs are not scaled: feature standard deviations reach {scale:.3g} (largest |x| "
                      f"{largest:.3g}), so the first layer starts far outside the sigmoid's useful range.",
            "Unscaled features make the first pre-activations, and so the logits, huge from the first step: sigmoid "
            "saturates, BCELoss clamps and the gradient vanishes"
            + (", which BatchNorm partly undoes in the hidden layers" if config.get("batchnorm") else "")
            + ". standardize=true scales each feature to zero mean and unit variance (fitted on the training split).",
            cause="unscaled inputs", fix={"standardize": True}))

    if status == "diverged":
        step = summary.get("diverged_step")
        out.append(Finding("problem", f"Training diverged at step {step}: a loss, logit or gradient became NaN or "
                                      "infinite.",
                           "Lower the learning rate, clip gradients (grad_clip), or train in float32; in float16 "
                           "Adam's eps rounds to zero and an update can divide by zero.",
                           cause="divergence", fix=_lower_lr(config)))
    elif status == "failed":
        first = (error or "unknown error").splitlines()[0]
        out.append(Finding("problem", f"The run failed: {first}", "The full error is shown below the findings."))
    elif status == "interrupted":
        out.append(Finding("warning", "The training process stopped without finishing (killed or crashed).",
                           "Everything logged before it stopped is kept; re-run it from its config."))
    elif status == "cancelled":
        out.append(Finding("info", f"The run was cancelled after {steps} steps.", "What it logged is kept."))

    if config.get("output_relu"):
        low = _num(summary, "min_pred_pos_rate")
        title = ("Every prediction is ≥ 0.5: a ReLU before the sigmoid." if low is None or low >= 1.0 else
                 "A ReLU before the sigmoid floors every probability at 0.5.")
        out.append(Finding("problem", title,
                           "ReLU makes every pre-sigmoid value ≥ 0, so sigmoid gives ≥ 0.5 and no sample can be "
                           "predicted negative. For a negative the best reachable loss is ln 2 ≈ 0.69, where the "
                           "ReLU's gradient is exactly zero; on balanced data the mean loss cannot fall below about "
                           "0.35. Remove output_relu and feed raw logits to bce_with_logits.",
                           cause="a ReLU before the sigmoid", fix={"output_relu": False}))

    wrong = _num(summary, "peak_clamp_wrong_frac")
    if wrong and loss == "bce":
        out.append(Finding("problem", f"{_pct(wrong)} of outputs were clamped on the wrong side: their loss is 100 "
                                      "and their gradient is zero.",
                           f"sigmoid rounds to exactly 1 above z ≈ {SATURATES_AT.get(dtype, 16.6)} in {dtype} "
                           "(and to 0 below about -88.7 in float32). BCELoss then clamps log(0) at -100: a confident "
                           "wrong prediction costs 100 and gets no gradient, so it can never be corrected. "
                           "bce_with_logits stays exact and keeps the gradient sigmoid(z) - y.",
                           cause="sigmoid saturation under BCELoss's clamp",
                           fix={"loss": "bce_with_logits", **({"clamp_eps": None} if config.get("clamp_eps") else {})}))
    elif wrong:  # bce_with_logits: the same saturation, but the exact loss is |z| and the gradient a full ±1
        out.append(Finding("warning", f"{_pct(wrong)} of outputs saturated on the wrong side: their probability is "
                                      "exactly 0 or 1, but the exact loss still charges them |z| and corrects them "
                                      "with a full gradient.",
                           f"sigmoid rounds to exactly 1 above z ≈ {SATURATES_AT.get(dtype, 16.6)} in {dtype}, so "
                           "these predictions are confidently wrong. bce_with_logits computes the loss from the logit, "
                           "so they still train (under sigmoid + BCELoss they would cost 100 with zero gradient). "
                           "Logits this large usually mean a learning rate too high or unscaled inputs."))
    else:
        clamped = _num(summary, "peak_clamp_frac")
        if clamped:
            out.append(Finding("info", f"Up to {_pct(clamped)} of a batch's outputs saturated to a probability of "
                                       "exactly 0 or 1, all on the right side.",
                               f"Harmless while they are right; in {dtype} sigmoid rounds to 1 above "
                               f"z ≈ {SATURATES_AT.get(dtype, 16.6)}, so one wrong sample there would cost 100 "
                               "with zero gradient under bce."))

    vanish = _num(summary, "peak_grad_vanish_frac")
    if vanish and vanish >= 0.01:
        out.append(Finding("warning", f"Up to {_pct(vanish)} of a batch's samples got less than 1% of the gradient "
                                      "the exact loss would give them.",
                           "Clamping (BCELoss's -100, its 1e-12 floor below z ≈ -27.6, or clamp_eps) cuts the "
                           "gradient where the error is largest. bce_with_logits avoids it."))

    eps = _num(summary, "peak_eps_clamp_frac")
    if eps and eps >= 0.01:
        out.append(Finding("warning", f"Up to {_pct(eps)} of probabilities fell outside [eps, 1 - eps] and were "
                                      "clamped: no gradient flows through them.",
                           f"clamp_eps = {config.get('clamp_eps')} bounds the loss but also stops learning on "
                           "those samples.", cause="clamp_eps too large", fix={"clamp_eps": None}))

    zero = summary.get("zero_update_steps")
    if isinstance(zero, int) and steps and zero == steps:
        out.append(Finding("problem", "The optimizer never changed the weights, although the gradients were not "
                                      "zero.",
                           "Each update rounds away (a learning rate far too small for the dtype), or the optimizer "
                           "was built from other parameters than the model's. The article's example builds it from "
                           "the class, not the instance."))
    elif isinstance(zero, int) and zero > 0:
        out.append(Finding("warning", f"On {zero} of {steps} steps the optimizer changed nothing although the "
                                      "gradient was non-zero.", "Updates rounded away in the compute dtype."))

    dead = _num(summary, "peak_dead_relu_frac")
    if dead and dead >= 0.25 and config.get("hidden"):
        out.append(Finding("warning", f"Up to {_pct(dead)} of ReLU units were dead (zero for a whole batch).",
                           "Dead units pass no gradient. Try ELU or leaky_relu, BatchNorm, or a smaller learning "
                           "rate.", cause="dead ReLUs", fix={"activation": "elu"}))

    gap_final = _num(summary, "final_train_loss")
    exact_final = _num(summary, "final_train_loss_logits")
    if loss == "bce" and gap_final is not None and exact_final is not None and abs(gap_final - exact_final) > 0.05:
        out.append(Finding("warning", f"At the end the optimised loss ({gap_final:.3f}) differs from the exact loss "
                                      f"({exact_final:.3f}) by {abs(gap_final - exact_final):.3f}.",
                           "The difference is what clamping did to the loss being minimised."))

    if config.get("dataset") == "random":
        auc = _num(summary, "final_val_auc")
        out.append(Finding("info", "The labels are random: there is nothing to learn"
                                   + (f" (val AUC {auc:.2f}, chance is 0.5)." if auc is not None else "."),
                           "The article's data: standard-normal inputs with labels drawn independently of them. "
                           "Any drop in training loss is memorisation."))

    best, final = _num(summary, "best_val_loss"), _num(summary, "final_val_loss")
    best_epoch, epochs = summary.get("best_val_epoch"), summary.get("epochs_completed") or 0
    if best is not None and final is not None and isinstance(best_epoch, int) and best_epoch < epochs - 1 \
            and final > best * 1.1 + 1e-3:
        out.append(Finding("warning", f"Validation loss rose {100 * (final / best - 1):.0f}% after its best "
                                      f"({best:.3f} at epoch {best_epoch}).",
                           "Overfitting, or an unstable learning rate. Weight decay or fewer epochs help."))

    pos_rate = _num(summary, "final_val_pred_pos_rate")
    if pos_rate in (0.0, 1.0) and not config.get("output_relu") and status == "finished":
        side = "positive" if pos_rate == 1.0 else "negative"
        out.append(Finding("warning", f"At the end every validation sample is predicted {side}.",
                           "The model collapsed to one class; check the class balance and pos_weight."))

    acc, auc = _num(summary, "final_val_acc"), _num(summary, "final_val_auc")
    if status == "finished" and acc is not None and not any(f.severity == "problem" for f in out):
        if acc >= 0.85 and config.get("dataset") != "random":
            out.append(Finding("good", f"The model learned: validation accuracy {acc:.1%}"
                                       + (f", AUC {auc:.3f}." if auc is not None else "."), ""))
    return out


def _lower_lr(config: Mapping[str, Any]) -> dict[str, Any] | None:
    lr = config.get("lr")
    return {"lr": float(f"{lr / 10:.3g}")} if isinstance(lr, (int, float)) and lr > 0 else None
