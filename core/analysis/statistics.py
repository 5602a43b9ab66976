"""A study's answer in one call: its main effects and interactions on the judged metric, Holm-corrected p-values
across all of them, the seeds each would need, and the sentences, interactions before the main effects they
qualify.

`study_statistics(frame, judge)` is what the `study` command, the Studies page and the table export show:
- `effects` (`core.analysis.effects`) and `interactions` (`core.analysis.interactions`) on `judge.column`;
- `p_holm` and `clear_holm` on both: Holm's correction over every finite p-value of the two tables together
  (`family` of them; `core.analysis.multiple`);
- `detectable` on both: the smallest true difference the study's seeds would find with 80% power, from its
  per-seed sd (`core.analysis.power`); with `difference`, `seeds_needed` for that difference;
- `sentences`: each clear interaction (smallest p first), then every main effect (those a clear interaction
  qualifies say so), then the interactions that are not clear. An effect whose interval excludes 0 but whose
  Holm-adjusted p does not stay under 0.05 says that too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from core.analysis.effects import (ROUNDING, choice_words, diverged_note, effect_sentence, effects, fmt, format_value,
                                   metric_words)
from core.analysis.interactions import interaction_sentence, interactions
from core.analysis.judges import Judge
from core.analysis.judges import judge as find_judge
from core.analysis.multiple import family_size, holm
from core.analysis.power import ALPHA, POWER, detectable_difference, seeds_needed


@dataclass(frozen=True)
class StudyStatistics:
    """What `study_statistics` returns."""

    judge: Judge
    effects: pd.DataFrame  # EFFECT_COLUMNS + p_holm, clear_holm, detectable (+ seeds_needed)
    interactions: pd.DataFrame  # INTERACTION_COLUMNS + the same
    sentences: list[str]
    clear: list[bool]  # per sentence: its effect or interaction is clear (its 95% interval excludes 0)
    family: int  # p-values the Holm correction counted
    difference: float | None = None  # the difference the seeds were planned for, if one was named
    power_sentences: list[str] = field(default_factory=list)
    held: list[bool] = field(default_factory=list)  # per sentence: clear, and still clear after Holm's correction


def study_statistics(frame: pd.DataFrame, judge: str | Judge | None = None, *, difference: float | None = None,
                     factors: Sequence[str] | None = None,
                     statuses: Sequence[str] = ("finished",)) -> StudyStatistics:
    """Everything the module docstring lists, for the study frame `frame` judged on `judge` (a name from
    `core.analysis.judges.JUDGES`, default the exact val loss). `difference` must be finite and non-zero."""
    found = judge if isinstance(judge, Judge) else find_judge(judge)
    if difference is not None and (not math.isfinite(difference) or difference == 0):
        raise ValueError(f"the difference to plan seeds for must be a finite non-zero number; got {difference!r}")
    main = effects(frame, found.column, factors=factors, statuses=statuses)
    inter = interactions(frame, found.column, factors=factors, statuses=statuses)
    p = np.concatenate([main["p_value"].to_numpy(dtype=float), inter["p_value"].to_numpy(dtype=float)])
    adjusted = holm(p)
    for table, part in ((main, adjusted[:len(main)]), (inter, adjusted[len(main):])):
        table["p_holm"] = part
        table["clear_holm"] = [bool(q < ALPHA) for q in part]
        table["detectable"] = [detectable_difference(int(n), float(sd)) for n, sd in zip(table["n_seeds"], table["sd"])]
        if difference is not None:
            table["seeds_needed"] = [seeds_needed(difference, float(sd)) for sd in table["sd"]]
    family = family_size(p)
    said = _sentences(main, inter, family)
    return StudyStatistics(judge=found, effects=main, interactions=inter, family=family, difference=difference,
                           sentences=[text for text, _, _ in said], clear=[clear for _, clear, _ in said],
                           held=[held for _, _, held in said], power_sentences=power_sentences(main, inter, difference))


def _sentences(main: pd.DataFrame, inter: pd.DataFrame, family: int) -> list[tuple[str, bool, bool]]:
    """(sentence, clear, still clear after Holm's correction) for each effect and interaction, in reading order."""
    # the clearest interaction first: it is the one the reader needs before the main effects
    clear = inter[inter["clear"]].sort_values("p_value", kind="stable").to_dict("records") if len(inter) else []
    # an effect is qualified by a clear interaction of its own level (lr 3.0 x BatchNorm qualifies lr 3.0, not lr 30)
    qualified: dict[tuple[str, str], list[str]] = {}
    for row in clear:
        (a, b), (la, lb) = row["fields"], row["levels"]
        qualified.setdefault((a, format_value(la)), []).append(b)
        qualified.setdefault((b, format_value(lb)), []).append(a)
    out = [(interaction_sentence(row) + _holm_note(row, family), True, _held(row, family)) for row in clear]
    for row in main.to_dict("records"):
        sentence = effect_sentence(row)
        others = list(dict.fromkeys(qualified.get((row["factor"], format_value(row["level"])), [])))
        if others and row["n_seeds"] >= 2:
            sentence = (f"{sentence[:-1]}, on average over {' and '.join(others)}: the interaction above says "
                        "where it holds.")
        out.append((sentence + diverged_note(row) + _holm_note(row, family), bool(row["clear"]),
                    _held(row, family)))
    out += [(interaction_sentence(row), False, False) for row in inter.to_dict("records") if not row["clear"]]
    return out


def _held(row: dict, family: int) -> bool:
    return bool(row["clear"]) and (bool(row["clear_holm"]) or family <= 1)


def _holm_note(row: dict, family: int) -> str:
    if row["clear"] and not row["clear_holm"] and family > 1:
        return (f" Not clear after Holm's correction for the {family} effects and interactions with a p-value "
                f"(adjusted p {row['p_holm']:.2g}).")
    return ""


def power_sentences(main: pd.DataFrame, inter: pd.DataFrame, difference: float | None = None) -> list[str]:
    """How many seeds, in words: per effect and interaction, the smallest difference its seeds could detect, and
    with `difference`, the seeds that difference needs."""
    out = []
    rows = [(r, _effect_name(r)) for r in main.to_dict("records")]
    rows += [(r, _interaction_name(r)) for r in inter.to_dict("records")]
    for row, name in rows:
        n, detectable = int(row["n_seeds"]), row["detectable"]
        metric = metric_words(row["metric"])
        if not math.isfinite(detectable):
            out.append(f"{name}: " + ("no results to plan from: a combination's runs all diverged." if
                                      row.get("diverged_corners") else
                                      f"too few seeds with results ({n}) to say what they could detect."))
            continue
        if detectable <= ROUNDING * _scale(row):  # "detects a difference of 0" (or of 5e-17, float rounding of
            # a spread of 0) is true of the formula and says nothing
            out.append(f"{name}: the difference is the same at each of the {n} seeds (sd 0), so there is no "
                       "spread to plan seeds from: any real difference shows at every seed.")
            continue
        text = f"{name}: {n} seeds detect a difference of {fmt(detectable)} in {metric}"
        if difference is not None:
            need = row["seeds_needed"]
            text += (f"; {fmt(abs(difference))} needs " +
                     (f"{int(need):,} seeds" if math.isfinite(need) else "more than a million seeds"))
        out.append(text + ".")
    return out


def _scale(row: dict) -> float:
    """The size of the values an effect's or interaction's differences come from (0 where the row has none)."""
    values = [abs(v) for k in ("level_mean", "baseline_mean") if isinstance(v := row.get(k), float)
              and math.isfinite(v)]
    return max(values, default=0.0)


def power_caption(family: int) -> str:
    """The assumptions behind the seeds figures and the Holm correction, in one caption."""
    return (f"Seeds: the smallest true difference found {POWER:.0%} of the time by the paired t-test over seeds "
            f"(two-sided, α = {ALPHA}), taking the per-seed differences as normal with the sd this study measured. "
            f"p-values are Holm-corrected across the {family} effects and interactions with a p-value.")


def _effect_name(row: dict) -> str:
    return choice_words(row["factor"], row["level"], row["baseline"])


def _interaction_name(row: dict) -> str:
    (a, b), (la, lb), (a0, b0) = row["fields"], row["levels"], row["baselines"]
    return f"{choice_words(a, la, a0)} × {choice_words(b, lb, b0)} (interaction)"
