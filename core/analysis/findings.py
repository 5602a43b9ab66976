"""Plain-language findings from a run's config, summary and status: what went wrong with the loss, and why.

Root causes come first (`core.analysis.causes`: each names the cause, the evidence and the config change that
fixes it), then the symptoms they explain. Every rule reads the stored summary (the trainer's peaks, finals,
medians and curve shapes), so a finding costs nothing to compute and is the same in the dashboard, the command
line and an exported report.
"""

from __future__ import annotations

from typing import Any, Mapping

from core.analysis.causes import cause_findings, wrong_cost
from core.analysis.evidence import majority
from core.analysis.finding_types import SATURATES_AT, SEVERITIES, Finding, num, pct

__all__ = ["SATURATES_AT", "SEVERITIES", "Finding", "findings", "findings_for"]

_num, _pct = num, pct
ECE_NOTE = 0.15  # a validation ECE this large is worth a note


def findings(run) -> list[Finding]:
    """Findings for a stored `Run` (anything with config, summary, status and error)."""
    return findings_for(run.config, run.summary, status=run.status, error=run.error)


def findings_for(config: Mapping[str, Any], summary: Mapping[str, Any], *, status: str,
                 error: str | None = None) -> list[Finding]:
    out: list[Finding] = cause_findings(config, summary, status=status)
    named = {f.cause for f in out}
    loss = config.get("loss", "bce")
    dtype = config.get("dtype", "float32")
    steps = summary.get("steps") or 0

    if status == "failed":
        first = (error or "unknown error").splitlines()[0]
        out.append(Finding("problem", f"The run failed: {first}", "The full error is shown below the findings."))
    elif status == "interrupted":
        out.append(Finding("warning", "The training process stopped without finishing (killed or crashed).",
                           "Everything logged before it stopped is kept; re-run it from its config."))
    elif status == "cancelled":
        out.append(Finding("info", f"The run was cancelled after {steps} steps.", "What it logged is kept."))

    wrong = _num(summary, "peak_clamp_wrong_frac")
    # bce_with_logits: the same saturation, but the exact loss is |z| and the gradient a full ±1
    if wrong and loss != "bce":
        out.append(Finding("warning", f"{_pct(wrong)} of outputs saturated on the wrong side: their probability is "
                                      "exactly 0 or 1, but the exact loss still charges them |z| and corrects them "
                                      "with a full gradient.",
                           f"sigmoid rounds to exactly 1 above z ≈ {SATURATES_AT.get(dtype, 16.6)} in {dtype}, so "
                           "these predictions are confidently wrong. bce_with_logits computes the loss from the logit, "
                           "so they still train (under sigmoid + BCELoss they would cost 100 with zero gradient). "
                           "Logits this large usually mean a learning rate too high or unscaled inputs."))
    elif not wrong:
        clamped = _num(summary, "peak_clamp_frac")
        if clamped:
            out.append(Finding("info", f"Up to {_pct(clamped)} of a batch's outputs saturated to a probability of "
                                       "exactly 0 or 1, all on the right side.",
                               f"Harmless while they are right; in {dtype} sigmoid rounds to 1 above "
                               f"z ≈ {SATURATES_AT.get(dtype, 16.6)}, so one wrong sample there would cost "
                               f"{wrong_cost(config)[0]} with zero gradient under bce."))

    vanish = _num(summary, "peak_grad_vanish_frac")
    if vanish and vanish >= 0.01:
        out.append(Finding("warning", f"Up to {_pct(vanish)} of a batch's samples got less than 1% of the gradient "
                                      "the exact loss would give them.",
                           "Clamping (BCELoss's -100, its 1e-12 floor below z ≈ -27.6, or clamp_eps) cuts the "
                           "gradient where the error is largest. bce_with_logits avoids it."))

    zero = summary.get("zero_update_steps")
    if isinstance(zero, int) and zero > 0 and "updates below the dtype's precision" not in named:
        out.append(Finding("warning", f"On {zero} of {steps} steps the optimizer changed nothing although the "
                                      "gradient was non-zero.", "Updates rounded away in the compute dtype."))

    dead = _num(summary, "peak_dead_relu_frac")
    if dead and dead >= 0.25 and config.get("hidden") and "dead ReLUs" not in named:
        out.append(Finding("info", f"Up to {_pct(dead)} of ReLU units were dead (zero for a whole batch) at some step.",
                           "Dead units pass no gradient; a few are common and harmless while the loss falls."))

    gap_final = _num(summary, "final_train_loss")
    exact_final = _num(summary, "final_train_loss_logits")
    if loss == "bce" and gap_final is not None and exact_final is not None and abs(gap_final - exact_final) > 0.05:
        out.append(Finding("warning", f"At the end the optimised loss ({gap_final:.3f}) differs from the exact loss "
                                      f"({exact_final:.3f}) by {abs(gap_final - exact_final):.3f}.",
                           "The difference is what clamping did to the loss being minimised."))

    best, final = _num(summary, "best_val_loss"), _num(summary, "final_val_loss")
    best_epoch, epochs = summary.get("best_val_epoch"), summary.get("epochs_completed") or 0
    if not named and best is not None and final is not None and isinstance(best_epoch, int) \
            and best_epoch < epochs - 1 and final > best * 1.1 + 1e-3:
        out.append(Finding("info", f"Validation loss rose {100 * (final / best - 1):.0f}% after its best "
                                   f"({best:.3f} at epoch {best_epoch}).",
                           "A little overfitting or noise; weight decay or fewer epochs help if it grows."))

    ece = _num(summary, "final_val_ece")
    if ece is not None and ece >= ECE_NOTE and status == "finished":
        out.append(Finding("info", f"The predicted probabilities are off by {ece:.2f} on average (validation ECE).",
                           "Expected calibration error: over ten probability bins, the gap between the mean "
                           "predicted probability and the share of positives. The run view draws the curve."))

    pos_rate = _num(summary, "final_val_pred_pos_rate")
    if pos_rate in (0.0, 1.0) and not config.get("output_relu") and status == "finished":
        side = "positive" if pos_rate == 1.0 else "negative"
        out.append(Finding("warning", f"At the end every validation sample is predicted {side}.",
                           "The model collapsed to one class; check the class balance and pos_weight."))

    acc, auc = _num(summary, "final_val_acc"), _num(summary, "final_val_auc")
    larger = majority(summary)
    # learned: accurate, and (on imbalanced data) well past always predicting the larger class, ranking well
    beats_prior = larger is None or acc is None or acc >= larger[0] + (1 - larger[0]) / 2
    if status == "finished" and acc is not None and not any(f.severity == "problem" for f in out):
        if acc >= 0.85 and config.get("dataset") != "random" and beats_prior and (auc is None or auc >= 0.75):
            out.append(Finding("good", f"The model learned: validation accuracy {acc:.1%}"
                                       + (f", AUC {auc:.3f}." if auc is not None else "."), ""))
    return out
