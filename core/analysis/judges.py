"""What a study's runs are judged on: the yardsticks a user picks (`--judge`, the Studies page's "Judged on").

A run trained with sigmoid + `BCELoss` reports its own loss with the -100 log clamp; a run trained on logits
reports the exact loss. Comparing the two on their own losses compares two yardsticks, so the default judge is the
exact validation loss (`val_loss_logits`: `BCEWithLogitsLoss` on the same logits, logged for every run whatever it
optimises). Each judge names one per-run number of a study frame:

    exact_loss  final_val_loss_logits  the exact val loss at the last epoch (default)         lower is better
    accuracy    final_val_acc          val accuracy at the last epoch                        higher is better
    auc         final_val_auc          val ROC AUC at the last epoch                         higher is better
    best_epoch  best_exact_epoch       the epoch of the lowest exact val loss (from its curve) lower is better
                                       (none for a run whose loss never got under ln 2: it never learned)
    loss_area   exact_loss_area        the area under the exact val loss curve: the sum of   lower is better
                                       its values over the epochs, one epoch wide each (a run that learns fast
                                       scores low)
    own_loss    final_val_loss         each run's own (optimised) val loss: only fair when every run uses the
                                       same loss                                              lower is better

`best_exact_epoch` and `exact_loss_area` are not in a run's stored summary: `curve_measures` computes them from
the run's `val_loss_logits` series (one value per epoch), and `core.jobs.studies.study_frame(curves=True)` adds
them to the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.analysis.evidence import LN2


@dataclass(frozen=True)
class Judge:
    """One yardstick: the study-frame column it reads and how it reads in words."""

    name: str  # what --judge takes
    column: str  # the per-run column of a study frame
    label: str  # for controls and table headings
    words: str  # for sentences: "BatchNorm lowers {words} by ..."
    higher_is_better: bool = False
    needs_curves: bool = False  # computed from the val_loss_logits series, not read from the summary


JUDGES: dict[str, Judge] = {j.name: j for j in (
    Judge("exact_loss", "final_val_loss_logits", "exact val loss", "final exact val loss"),
    Judge("accuracy", "final_val_acc", "val accuracy", "final val accuracy", higher_is_better=True),
    Judge("auc", "final_val_auc", "val AUC", "final val AUC", higher_is_better=True),
    Judge("best_epoch", "best_exact_epoch", "best epoch", "the epoch of the lowest exact val loss",
          needs_curves=True),
    Judge("loss_area", "exact_loss_area", "area under the exact loss", "the area under the exact val loss curve",
          needs_curves=True),
    Judge("own_loss", "final_val_loss", "own val loss", "final val loss (each run's own loss)"),
)}
DEFAULT_JUDGE = "exact_loss"
CURVE_KEY = "val_loss_logits"  # the series best_epoch and loss_area are read from
CURVE_COLUMNS: tuple[str, ...] = ("best_exact_epoch", "exact_loss_area")


def judge(name: str | None) -> Judge:
    """The judge called `name` (None: the default); a ValueError listing the allowed names otherwise."""
    if name is None:
        return JUDGES[DEFAULT_JUDGE]
    if name not in JUDGES:
        raise ValueError(f"{name!r} is not a judge; choose one of: {', '.join(JUDGES)}")
    return JUDGES[name]


def judge_warning(name: str, varied: Sequence[str]) -> str | None:
    """Why judging a study that varies `varied` on the judge `name` misleads, or None: `own_loss` reads each run's
    own loss, so over a varied `loss` it compares a clamped BCE with an exact one."""
    if name == "own_loss" and "loss" in varied:
        return ("own_loss compares each run's own val loss, and this study varies loss: a clamped BCE run's and a "
                "logits run's losses are different yardsticks. exact_loss judges every run on the same one.")
    return None


def judge_for_column(column: str) -> Judge | None:
    """The judge that reads `column`, if any."""
    return next((j for j in JUDGES.values() if j.column == column), None)


def curve_measures(epochs: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(best epoch, area) of one run's exact val loss curve, one value per epoch: the epoch of its lowest finite
    value (the first of equals) and the area under it, each epoch's value one epoch wide (their sum). NaN for
    both without a value; a curve with a NaN or an infinite value has an infinite area (it diverged: no finite
    area describes it). The best epoch is NaN, not judged, when the curve never got under ln 2 (evidence.LN2, a
    coin flip's loss): a run that never learned would otherwise have its best at epoch 0, the "fastest"."""
    e = np.asarray(epochs, dtype=float)
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    order = np.argsort(e, kind="stable")
    e, v = e[order], v[order]
    finite = np.isfinite(v)
    best = float(e[finite][np.argmin(v[finite])]) if finite.any() else math.nan
    if finite.any() and v[finite].min() >= LN2:
        best = math.nan  # never better than a coin flip: no epoch it learned best by (its first is not "fastest")
    if not finite.all():
        return best, math.inf
    return best, float(v.sum())
