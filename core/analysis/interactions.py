"""Interactions: whether the effect of one varied field depends on the value of another, with a 95% interval.

For two varied fields A (baseline level a0) and B (baseline b0), a level a of A other than a0 and a level b of B
other than b0, and a metric y, per seed s:

    for each combination c of the other varied fields (only those where all four cells have a result):
        A's effect with b0:  y(a, b0, c) - y(a0, b0, c)
        A's effect with b:   y(a, b, c)  - y(a0, b, c)
        interaction:         (A's effect with b) - (A's effect with b0)
                           = y(a, b, c) - y(a0, b, c) - y(a, b0, c) + y(a0, b0, c)
    each of the three is then averaged over those combinations: one value per seed

and, over the n seeds that have at least one complete combination, each is reported as mean +- t(0.975, n - 1) *
sd / sqrt(n) with the paired t-test's p, exactly as the main effects (`core.analysis.effects`). The interaction is
symmetric: it is also B's effect with a minus B's effect with a0.

Fields with more than two levels: each non-baseline level of A is paired with each non-baseline level of B, every
contrast against the two baselines (treatment contrasts), so a 3 x 2 pair of fields gives 2 interactions. The
rows are ordered by field pair (in the study's order), then by level. Interactions of three or more fields are
not computed: a pair's contrast is averaged over the other fields' combinations.

In words: when the interaction is clear (its interval excludes 0), the sentence says how A's effect changes with B,
e.g. "BatchNorm matters only with bce: ..." when A's effect is clear at one level of B and not at the other.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.analysis.effects import (
    FLAG_WORDS,
    cell_means,
    check_factors,
    choice_words,
    ended_counts,
    fmt,
    format_value,
    levels_in,
    metric_words,
    paired_p,
    t_interval,
    variant_keys,
    without_rounding,
)

INTERACTION_COLUMNS: tuple[str, ...] = (
    "fields", "levels", "baselines", "metric", "estimate", "ci_low", "ci_high", "n_seeds", "pairs", "sd", "p_value",
    "clear", "effect_at_baseline", "effect_at_baseline_ci_low", "effect_at_baseline_ci_high",
    "effect_at_level", "effect_at_level_ci_low", "effect_at_level_ci_high", "diverged_corners")


def interactions(frame: pd.DataFrame, metric: str = "final_val_loss", *, factors: Sequence[str] | None = None,
                 statuses: Sequence[str] = ("finished",)) -> pd.DataFrame:
    """One row per pair of varied fields (each with two or more levels) and per pair of non-baseline levels.

    Columns (`INTERACTION_COLUMNS`): fields ([A, B]), levels ([a, b]), baselines ([a0, b0]), metric, estimate (the
    interaction contrast, mean over seeds), ci_low, ci_high, n_seeds, pairs (complete (combination, seed) sets
    used), sd (of the per-seed contrasts), p_value, clear (the interval excludes 0), and A's simple effects with
    mean and interval: effect_at_baseline (a vs a0 with b0) and effect_at_level (a vs a0 with b)."""
    factors = check_factors(frame, factors)
    cells = cell_means(frame, factors, metric, statuses)
    seeds = list(dict.fromkeys(frame["seed"]))
    varied = [(i, f, levels_in(frame[f])) for i, f in enumerate(factors)]
    varied = [v for v in varied if len(v[2]) >= 2]
    rows = []
    for (i, a_name, a_levels), (j, b_name, b_levels) in itertools.combinations(varied, 2):
        others = [k for k, _ in enumerate(factors) if k not in (i, j)]
        combos = list(dict.fromkeys(variant_keys(frame, [factors[k] for k in others])))
        ended = ended_counts(frame, [a_name, b_name])
        for a, b in itertools.product(a_levels[1:], b_levels[1:]):
            row = _interaction(cells, seeds, len(factors), (i, j), others, combos,
                               (a_name, b_name), (a, b), (a_levels[0], b_levels[0]), metric)
            row["diverged_corners"] = [[x, y] for x in (a, a_levels[0]) for y in (b, b_levels[0])
                                       if _all_diverged(ended.get((format_value(x), format_value(y))))]
            rows.append(row)
    return pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS))


def _interaction(cells, seeds, width: int, pair: tuple[int, int], others: list[int], combos, names, levels,
                 baselines, metric: str) -> dict[str, Any]:
    def key(a: Any, b: Any, combo: tuple) -> tuple:
        out: list[Any] = [None] * width
        out[pair[0]], out[pair[1]] = a, b
        for k, value in zip(others, combo):
            out[k] = value
        return tuple(out)

    (a, b), (a0, b0) = levels, baselines
    inter, at_base, at_level, pairs, scale = [], [], [], 0, 0.0
    for seed in seeds:
        here = []
        for combo in combos:
            corners = [cells.get((key(x, y, combo), seed)) for x, y in ((a, b), (a0, b), (a, b0), (a0, b0))]
            if all(v is not None for v in corners):
                here.append(corners)
        if not here:
            continue
        ys = np.array(here).mean(axis=0)  # y(a,b), y(a0,b), y(a,b0), y(a0,b0), averaged over the combinations
        scale = max(scale, float(np.abs(ys).max()))
        pairs += len(here)
        at_level.append(ys[0] - ys[1])
        at_base.append(ys[2] - ys[3])
        inter.append(ys[0] - ys[1] - ys[2] + ys[3])
    d = without_rounding(np.array(inter), scale)
    n = d.size
    mean, lo, hi = t_interval(d)
    base = t_interval(without_rounding(np.array(at_base), scale))
    level = t_interval(without_rounding(np.array(at_level), scale))
    return {"fields": list(names), "levels": [a, b], "baselines": [a0, b0], "metric": metric,
            "estimate": mean, "ci_low": lo, "ci_high": hi, "n_seeds": n, "pairs": pairs,
            "sd": float(d.std(ddof=1)) if n >= 2 else math.nan, "p_value": paired_p(d),
            "clear": bool(n >= 2 and (lo > 0 or hi < 0)),
            "effect_at_baseline": base[0], "effect_at_baseline_ci_low": base[1], "effect_at_baseline_ci_high": base[2],
            "effect_at_level": level[0], "effect_at_level_ci_low": level[1], "effect_at_level_ci_high": level[2]}


def _all_diverged(counts: tuple[int, int] | None) -> bool:
    """A corner whose every run that ended, diverged: no result there, however many seeds."""
    return bool(counts) and counts[1] > 0 and counts[0] == counts[1]


def interaction_sentences(table: pd.DataFrame) -> list[str]:
    """Each interaction in words, e.g. "BatchNorm matters only with bce: with bce it lowers final exact val loss
    by 5,749 (95% CI ...); with bce_with_logits it makes no clear difference (...). Interaction (its effect with
    bce_with_logits minus with bce): +5,749, 95% CI ..." or "BatchNorm and bce_with_logits instead of bce: no
    clear interaction on final val loss (+0.01, 95% CI -0.02 to 0.04 includes 0)."."""
    return [interaction_sentence(row) for row in table.to_dict("records")]


def interaction_sentence(row: dict[str, Any]) -> str:
    (a_name, b_name), (a, b), (a0, b0) = row["fields"], row["levels"], row["baselines"]
    metric = metric_words(row["metric"])
    subject = choice_words(a_name, a, a0)
    est, lo, hi, n = row["estimate"], row["ci_low"], row["ci_high"], row["n_seeds"]
    pair = f"{subject} and {choice_words(b_name, b, b0)}"
    if n < 2 or not math.isfinite(lo):
        lost = row.get("diverged_corners") or []
        if lost:  # more seeds would not help: a combination has no result because its runs diverge
            where = " and ".join(f"{a_name}={format_value(x)} with {b_name}={format_value(y)}" for x, y in lost)
            return (f"{pair}: their interaction on {metric} cannot be judged: every run of {where} diverged, so "
                    "that combination has no result.")
        return (f"{pair}: their interaction on {metric} cannot be judged yet: that needs results in all four "
                f"combinations for at least 2 seeds (there {'is' if n == 1 else 'are'} {n}).")
    interval = f"{_signed(est)}, 95% CI {fmt(lo)} to {fmt(hi)}"
    if not row["clear"]:
        return f"{pair}: no clear interaction on {metric} ({interval} includes 0)."
    with_base, with_level = _condition(b_name, b0), _condition(b_name, b)
    base = (row["effect_at_baseline"], row["effect_at_baseline_ci_low"], row["effect_at_baseline_ci_high"])
    level = (row["effect_at_level"], row["effect_at_level_ci_low"], row["effect_at_level_ci_high"])
    base_clear, level_clear = _clear(*base), _clear(*level)
    tail = f" Interaction (its effect {with_level} minus {with_base}): {interval}."
    if base_clear != level_clear:
        (where, effect), (elsewhere, other) = ((with_base, base), (with_level, level)) if base_clear else \
            ((with_level, level), (with_base, base))
        if (other[0] > 0) == (effect[0] > 0) and abs(other[0]) >= ONLY_UNDER * abs(effect[0]):
            # nearly as large the other way round, its interval only just taking in 0: not "only"
            more = "more" if abs(effect[0]) > abs(other[0]) else "less"
            return (f"{subject} matters {more} {where} than {elsewhere}: {where} it {_change(effect, metric)}; "
                    f"{elsewhere} it {_change(other, metric)}, an interval that includes 0.{tail}")
        return (f"{subject} matters only {where}: {where} it {_change(effect, metric)}; {elsewhere} it makes no "
                f"clear difference ({_signed(other[0])}, 95% CI {fmt(other[1])} to {fmt(other[2])}).{tail}")
    if base_clear and level_clear and (base[0] > 0) != (level[0] > 0):
        return (f"{subject} works in opposite directions: {with_base} it {_change(base, metric)}; {with_level} it "
                f"{_change(level, metric)}.{tail}")
    if base_clear and level_clear:
        more = "more" if abs(level[0]) > abs(base[0]) else "less"
        return (f"{subject} matters {more} {with_level} than {with_base}: {with_level} it {_change(level, metric)}; "
                f"{with_base} it {_change(base, metric)}.{tail}")
    return (f"The effect of {subject} on {metric} depends on {b_name}, though it is not clear on its own at either "
            f"value: {with_base} {_signed(base[0])} (95% CI {fmt(base[1])} to {fmt(base[2])}), {with_level} "
            f"{_signed(level[0])} (95% CI {fmt(level[1])} to {fmt(level[2])}).{tail}")


# "matters only with X" when the effect at the other level, not clear on its own, is under half as large (or of the
# other sign); an effect 89% as large whose interval just reaches 0 "matters less" there instead
ONLY_UNDER = 0.5


def _clear(mean: float, lo: float, hi: float) -> bool:
    return math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)


def _change(effect: tuple[float, float, float], metric: str) -> str:
    d, lo, hi = effect
    a, b = (-hi, -lo) if d < 0 else (lo, hi)
    return f"{'lowers' if d < 0 else 'raises'} {metric} by {fmt(abs(d))} (95% CI {fmt(a)} to {fmt(b)})"


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + fmt(x)


def _condition(field: str, value: Any) -> str:
    """"with bce", "without BatchNorm", "with lr 0.1": a level of the other field as a condition."""
    if isinstance(value, (bool, np.bool_)) and field in FLAG_WORDS:
        return f"{'with' if value else 'without'} {FLAG_WORDS[field]}"
    if isinstance(value, str):
        return f"with {value}"
    return f"with {field} {format_value(value)}"
