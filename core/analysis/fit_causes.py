"""Root causes in the data and the fit (`core.analysis.causes` runs them with the others, in its order of
precedence): random labels, unscaled inputs, a linear model for non-linear data, predicting the majority class,
overfitting and too few optimizer steps. Each reads the run's config and summary, as every rule does."""

from __future__ import annotations

import math

from core.analysis.evidence import (CHANCE_AUC, IMBALANCED, LN2, MAJORITY_SLACK, NONLINEAR_DATASETS, OVERFIT_ABOVE,
                                    OVERFIT_PROBLEM, OVERFIT_PROBLEM_ABOVE, OVERFIT_RISE, OVERFIT_TRAIN_ACC,
                                    TAIL_DROP, TAIL_FALL, TAIL_STEADY, UNDERFIT_ACC, UNSCALED_STD, majority, plateau,
                                    prior_loss)
from core.analysis.finding_types import Finding, num

UNSCALED = "unscaled inputs"
RANDOM_LABELS = "random labels"
LINEAR = "a linear model for non-linear data"
NO_NONLINEARITY = "no non-linearity"
MAJORITY = "predicting the majority class"
OVERFITTING = "overfitting"
FEW_STEPS = "too few optimizer steps"


def random_labels(config, s, status) -> Finding | None:
    if config.get("dataset") != "random":
        return None
    auc, train_acc = num(s, "final_val_auc"), num(s, "final_train_acc")
    evidence = (f" Validation AUC {auc:.2f} (chance is 0.5)" if auc is not None else "") + \
               (f", training accuracy {train_acc:.0%}" if train_acc is not None else "")
    return Finding("warning", "The labels are random: there is nothing to learn.",
                   "The data set draws standard-normal inputs and labels independently of them (the article's "
                   f"data).{evidence + '.' if evidence else ''} Any drop in training loss is memorisation and the "
                   "validation loss cannot beat ln 2. Train on data whose labels depend on the inputs.",
                   cause=RANDOM_LABELS, fix={"dataset": "gaussian"})


def unscaled_inputs(config, s, status) -> Finding | None:
    scale, largest = num(s, "input_std_max"), num(s, "input_abs_max")
    if scale is None or scale < UNSCALED_STD or config.get("standardize", True):
        return None
    saturated = bool(num(s, "peak_clamp_frac")) or (num(s, "logit_abs_max") or num(s, "peak_logit_abs_max") or 0) > 16
    if config.get("batchnorm"):
        severity = "info"  # BatchNorm rescales the first layer's outputs: whatever else happened, not this
    else:
        severity = "problem" if saturated or status == "diverged" else "warning"
    largest_text = f" (largest |x| {largest:.3g})" if largest is not None else ""
    return Finding(severity, f"The inputs are not scaled: feature standard deviations reach {scale:.3g}"
                             f"{largest_text}, so the first layer starts far outside the sigmoid's useful range.",
                   "Unscaled features make the first pre-activations, and so the logits, huge from the first step: "
                   "sigmoid saturates, BCELoss clamps and the gradient vanishes"
                   + (", which BatchNorm partly undoes in the hidden layers" if config.get("batchnorm") else "")
                   + ". standardize=true scales each feature to zero mean and unit variance (fitted on the "
                     "training split).", cause=UNSCALED, fix={"standardize": True})


def underfit(config, s, status) -> Finding | None:
    train_acc = num(s, "final_train_acc")
    if config.get("dataset") == "random":
        return None  # no model fits labels drawn apart from the inputs (`random_labels` says so)
    if not plateau(s) or train_acc is None or train_acc >= UNDERFIT_ACC:
        return None
    hidden = config.get("hidden") or ()
    if not hidden:
        return Finding("problem", f"A linear model cannot fit this data: training accuracy {train_acc:.0%} and a "
                                  "flat loss.",
                       "Without a hidden layer the model draws one straight boundary; the loss settled where no "
                       "straight line does better. One hidden layer of 32 units can bend it.",
                       cause=LINEAR, fix={"hidden": [32]})
    if config.get("activation") == "identity":
        return Finding("problem", f"The hidden layers have no activation, so the model is still linear: training "
                                  f"accuracy {train_acc:.0%} and a flat loss.",
                       "Linear layers stacked without a non-linearity multiply into one linear map. A ReLU between "
                       "them lets the boundary bend.", cause=NO_NONLINEARITY, fix={"activation": "relu"})
    return None


def majority_class(config, s, status) -> Finding | None:
    """On imbalanced data, an accuracy no better than always predicting the larger class and an AUC near chance:
    the model learned the class prior and nothing else, whatever its accuracy looks like."""
    larger, acc, auc = majority(s), num(s, "final_val_acc"), num(s, "final_val_auc")
    if status != "finished" or larger is None or acc is None or larger[0] < IMBALANCED:
        return None
    share, side = larger
    if acc > share + MAJORITY_SLACK or (auc is not None and auc >= CHANCE_AUC):
        return None
    p = num(s, "val_pos_frac") or 0.0
    val, prior = num(s, "final_val_loss_logits"), prior_loss(p)
    loss = (f" Its exact validation loss, {val:.3g}, is {'above' if val > prior else 'near'} the {prior:.3g} of "
            f"predicting the positive share, {p:.1%}, for every sample." if val is not None else "")
    title = (f"The model does no better than always predicting {side}: validation accuracy {acc:.1%} against "
             f"{share:.1%} {side} samples" + (f", AUC {auc:.3f} (0.5 is chance)." if auc is not None else "."))
    detail = (f"On data this imbalanced, predicting the larger class for every sample scores {share:.1%}, so the "
              f"accuracy says nothing; the AUC says the model ranks the samples barely better than a coin.{loss}")
    noise, wanted = config.get("noise") or 0, config.get("pos_fraction")
    if config.get("dataset") in NONLINEAR_DATASETS and not config.get("hidden"):
        return Finding("problem", title, detail + f" No straight line separates {config.get('dataset')}, and with "
                       "no hidden layer the model draws one: the best it can do is the prior. One hidden layer of "
                       "32 units can bend it.", cause=MAJORITY, fix={"hidden": [32]})
    if config.get("dataset") == "gaussian" and noise and isinstance(wanted, (int, float)) and p:
        flipped = noise * (1 - wanted) / p if p < 0.5 else noise * wanted / (1 - p)
        if flipped >= 0.25:
            return Finding("problem", title, detail + f" The data's noise ({noise:g}) flips that share of every "
                           f"label, so about {min(flipped, 1):.0%} of the "
                           f"{'positive' if side == 'negative' else 'negative'} labels are flipped ones: there is "
                           "little left to learn. Less label noise (or a less imbalanced split) gives the model "
                           "something to find.", cause=MAJORITY,
                           fix={"noise": 0.0})
    return Finding("problem", title, detail + " Judge it by the AUC and the exact loss, not accuracy; pos_weight "
                   "(negatives per positive) makes the loss weigh the classes alike.", cause=MAJORITY)


def overfitting(config, s, status) -> Finding | None:
    best, final = num(s, "best_val_loss"), num(s, "final_val_loss")
    best_epoch, epochs = s.get("best_val_epoch"), s.get("epochs_completed") or 0
    train_acc = num(s, "final_train_acc")
    if best is None or final is None or not isinstance(best_epoch, int) or best_epoch >= epochs - 1:
        return None
    rise = final / best - 1 if best > 0 else math.inf
    if rise < OVERFIT_RISE or final - best < OVERFIT_ABOVE or train_acc is None or train_acc < OVERFIT_TRAIN_ACC:
        return None
    severity = "problem" if rise >= OVERFIT_PROBLEM and final - best >= OVERFIT_PROBLEM_ABOVE else "warning"
    return Finding(severity, f"Overfitting: the validation loss rose {rise:.0%} after its best ({best:.3g} at epoch "
                             f"{best_epoch}) while training accuracy reached {train_acc:.0%}.",
                   f"The model went on fitting the training split, noise included, for {epochs - 1 - best_epoch} "
                   f"more epochs. Stop at epoch {best_epoch + 1} (or add weight_decay, or use more data).",
                   cause=OVERFITTING, fix={"epochs": best_epoch + 1})


def few_steps(config, s, status) -> Finding | None:
    tail, fall = num(s, "val_loss_tail_drop"), num(s, "val_loss_tail_fall")
    epochs = config.get("epochs") or 1
    if status != "finished" or tail is None or fall is None or tail < TAIL_DROP or fall < TAIL_FALL:
        return None
    if (num(s, "final_val_loss_logits") or 0) > LN2:
        return None  # still worse than predicting 0.5 everywhere: falling from far too high, not short of steps
    if (num(s, "val_loss_osc") or 0) >= TAIL_STEADY:
        return None
    steps = s.get("steps")
    return Finding("warning", f"Training stopped while the validation loss was still falling {tail:.0%} an epoch.",
                   f"{steps} optimizer steps were not enough: the loss would have gone on falling. Train for more "
                   f"epochs (or smaller batches, which take more steps per epoch).",
                   cause=FEW_STEPS, fix={"epochs": min(epochs * 10, 100_000)})
