"""What a study's runs say: its variants ranked, and the effect of each varied field with a 95% interval.

Everything here is a pure function of a study frame: one row per run, the varied fields as columns named like
the config fields, a `seed` column, a `status` column and the result columns below (what
`core.studies.study_frame` returns, or a frame built by hand). Only runs whose status is in `statuses`
(default: "finished") and whose metric is finite count as results; diverged, failed, cancelled and interrupted
runs are counted in the ranking but never averaged in.

The effect of a field F (levels L0, L1, ... in the order they first appear; `study_frame` lists runs in the
study's grid order, so L0 is the first value given to `--vary`), for each level L != L0 and a metric y:

    for each seed s:  d_s = mean over the combinations c of the other fields of [ y(L, c, s) - y(L0, c, s) ]
                      (only the combinations where both runs have a result; with a complete grid this is
                      exactly the difference of the two levels' marginal means at seed s)
    difference      = mean of d_s over the seeds that have at least one such pair (n of them)
    95% CI          = difference +- t(0.975, n - 1) * sd(d_s, ddof=1) / sqrt(n)   (none when n < 2)
    p_value         = the paired t-test's two-sided p for "difference = 0"

Seeds are the unit of replication: runs that share a seed share the data split, the batch order and, where the
shapes agree, the initial weights, so each seed gives one paired comparison. Several runs in one (variant,
seed) cell are averaged first.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd

from core.analysis.judges import CURVE_COLUMNS, judge_for_column
from core.experiment.config import field_kind, field_names

# Per-run result columns, read from the run's stored summary (NaN where a run has none).
SUMMARY_METRICS: tuple[str, ...] = ("final_val_loss", "best_val_loss", "final_val_auc", "final_val_acc",
                                    "best_val_acc", "final_val_loss_logits", "final_train_loss", "epochs_completed",
                                    "best_val_epoch", "diverged_step")
# Columns of a study frame that are not varied fields; every other column is a factor.
RESULT_COLUMNS: tuple[str, ...] = ("run_id", "name", "status", "variant", "seed", *SUMMARY_METRICS,
                                   *CURVE_COLUMNS, "wall_time_s", "error")
RANKED_METRICS: tuple[str, ...] = ("final_val_loss", "best_val_loss", "final_val_auc")
HIGHER_IS_BETTER: frozenset[str] = frozenset({"final_val_auc", "final_val_acc", "best_val_acc"})

EFFECT_COLUMNS: tuple[str, ...] = ("factor", "level", "baseline", "metric", "level_mean", "baseline_mean",
                                   "difference", "ci_low", "ci_high", "n_seeds", "pairs", "sd", "p_value", "clear",
                                   "level_diverged", "level_ended", "baseline_diverged", "baseline_ended")

# Words for the sentences: how a metric and a yes/no field read in prose.
_METRIC_WORDS = {"final_val_loss": "final val loss", "best_val_loss": "best val loss",
                 "final_val_auc": "final val AUC", "final_val_acc": "final val accuracy",
                 "best_val_acc": "best val accuracy", "final_val_loss_logits": "final exact val loss",
                 "final_train_loss": "final train loss"}
FLAG_WORDS = {"batchnorm": "BatchNorm", "output_relu": "an output ReLU", "standardize": "standardizing the inputs"}
NO_FLAG_WORDS = {"batchnorm": "no BatchNorm", "output_relu": "no output ReLU", "standardize": "unstandardized inputs"}


def factor_columns(frame: pd.DataFrame) -> list[str]:
    """The varied fields of a study frame: every column that is not one of `RESULT_COLUMNS`."""
    return [c for c in frame.columns if c not in RESULT_COLUMNS]


def variant_label(variant: Mapping[str, Any]) -> str:
    """"batchnorm=true activation=elu loss=bce": how runs, rankings and charts name a variant."""
    return " ".join(change_parts(variant)) or "base"


def change_parts(change: Mapping[str, Any]) -> list[str]:
    """A config change's fields as the command line takes them back: ["loss=bce_with_logits", "clamp_eps=none"]."""
    return [f"{k}={format_value(v)}" for k, v in change.items()]


def change_text(change: Mapping[str, Any]) -> str:
    """A fix, "loss=bce_with_logits, clamp_eps=none": one spelling wherever a fix is named (its proof's runs and
    verdict, the findings, the Prove-the-fix button)."""
    return ", ".join(change_parts(change))


def format_value(value: Any, *, cli: bool = True) -> str:
    """A field value as one short string: lists as [64, 64], None as 'none', floats exactly (0.01, 1e-05).
    Booleans as the command line takes them back (true/false), or with `cli=False` as Python writes them."""
    if isinstance(value, bool) and cli:
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v, cli=cli) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---------------------------------------------------------------------- ranking
def ranking(frame: pd.DataFrame, *, factors: Sequence[str] | None = None,
            statuses: Sequence[str] = ("finished",), metric: str | None = None) -> pd.DataFrame:
    """Variants ranked by mean final val loss (then mean best val loss), best first; variants without results last.

    One row per variant: rank, variant, the factor values, runs (all of its runs), n (runs counted as results),
    diverged, failed, and for each of `RANKED_METRICS` its mean and sample sd (ddof=1) over the counted runs.
    With `metric` (the judged column, e.g. final_val_loss_logits) the variants are ranked by its mean instead
    (highest first where `HIGHER_IS_BETTER`), and it gets its mean, sd and 95% t interval over the counted runs
    (`{metric}_mean`, `_sd`, `_ci_low`, `_ci_high`).
    """
    factors = check_factors(frame, factors)
    _require(frame, ["status"] + ([metric] if metric else []))
    counted = frame["status"].isin(list(statuses))
    metrics = list(dict.fromkeys([*RANKED_METRICS, *([metric] if metric else [])]))
    rows = []
    for key, group in _groups(frame, factors):
        row: dict[str, Any] = {"variant": _label(group, factors, key), **dict(zip(factors, key))}
        ok = group[counted.loc[group.index]]
        row |= {"runs": len(group), "n": len(ok), "diverged": int((group["status"] == "diverged").sum()),
                "failed": int((group["status"] == "failed").sum())}
        for name in metrics:
            values = _finite(ok[name]) if name in ok else np.array([])
            row[f"{name}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{name}_sd"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            if name == metric:
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = t_interval(values)[1:]
        rows.append(row)
    columns = ["variant", *factors, "runs", "n", "diverged", "failed",
               *(f"{m}_{s}" for m in metrics for s in ("mean", "sd")),
               *((f"{metric}_ci_low", f"{metric}_ci_high") if metric else ())]
    table = pd.DataFrame(rows, columns=columns)
    order = ["final_val_loss_mean", "best_val_loss_mean"]
    if metric:
        key = f"{metric}_mean"
        if metric in HIGHER_IS_BETTER:  # best first, missing last: sort the negated means
            table["_key"] = -table[key]
            key = "_key"
        order = [key, *order]
    table = table.sort_values(order, na_position="last", kind="stable").drop(columns=["_key"], errors="ignore")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


# ---------------------------------------------------------------------- effects
def effects(frame: pd.DataFrame, metric: str = "final_val_loss", *, factors: Sequence[str] | None = None,
            statuses: Sequence[str] = ("finished",)) -> pd.DataFrame:
    """The factor-effects table (see the module docstring for the exact computation): one row per varied field
    with two or more levels and per level other than the first. Columns (`EFFECT_COLUMNS`): factor, level,
    baseline (the first level), metric, level_mean and baseline_mean (over the pairs used), difference (level
    minus baseline), ci_low, ci_high, n_seeds, pairs (the (combination, seed) pairs used), sd (of the per-seed
    differences, ddof=1: what `core.analysis.power` plans seeds from), p_value, clear (the interval excludes
    0), and level_diverged, level_ended, baseline_diverged, baseline_ended: of the runs at the level (and at the
    baseline) that ended, finished or diverged, how many diverged. A diverged run has no result to average, so
    these say what the difference leaves out: a level whose every run diverged has no mean at all."""
    factors = check_factors(frame, factors)
    cells = cell_means(frame, factors, metric, statuses)
    seeds = list(dict.fromkeys(frame["seed"]))
    rows = []
    for i, factor in enumerate(factors):
        levels = levels_in(frame[factor])
        if len(levels) < 2:
            continue
        others = [f for f in factors if f != factor]
        combos = list(dict.fromkeys(variant_keys(frame, others)))
        ended = ended_counts(frame, [factor])
        for level in levels[1:]:
            (level_diverged, level_ended), (base_diverged, base_ended) = (
                ended.get((format_value(v),), (0, 0)) for v in (level, levels[0]))
            rows.append(_effect(cells, seeds, i, factor, level, levels[0], combos, metric)
                        | {"level_diverged": level_diverged, "level_ended": level_ended,
                           "baseline_diverged": base_diverged, "baseline_ended": base_ended})
    return pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))


def ended_counts(frame: pd.DataFrame, fields: Sequence[str]) -> dict[tuple[str, ...], tuple[int, int]]:
    """Each combination of `fields`' values (as `format_value` writes them) -> (its runs that diverged, its runs
    that ended: finished or diverged). A diverged run has no result: these say what the means leave out."""
    out: dict[tuple[str, ...], list[int]] = {}
    ended = frame[frame["status"].isin(("finished", "diverged"))]
    for values, status in zip(zip(*(ended[f] for f in fields)), ended["status"]):
        counts = out.setdefault(tuple(format_value(v) for v in values), [0, 0])
        counts[0] += status == "diverged"
        counts[1] += 1
    return {key: (a, b) for key, (a, b) in out.items()}


def cell_means(frame: pd.DataFrame, factors: Sequence[str], metric: str,
               statuses: Sequence[str] = ("finished",)) -> dict[tuple[tuple[Hashable, ...], Any], float]:
    """(variant values, seed) -> the mean `metric` of that cell's counted runs (status in `statuses`, finite
    value); cells without one are absent."""
    _require(frame, ["status", "seed", metric, *factors])
    sums: dict[tuple[tuple[Hashable, ...], Any], list[float]] = {}
    values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
    for key, seed, status, value in zip(variant_keys(frame, list(factors)), frame["seed"], frame["status"], values):
        if status in statuses and math.isfinite(value):
            sums.setdefault((key, seed), []).append(value)
    return {cell: float(np.mean(v)) for cell, v in sums.items()}


def paired_p(d: np.ndarray) -> float:
    """The paired t-test's two-sided p for "mean of d = 0" (NaN below 2 values; 0 or 1 when d does not vary)."""
    n = d.size
    if n < 2:
        return math.nan
    from scipy import stats  # noqa: PLC0415 - keeps `python -m core` start-up free of scipy

    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def _effect(cells, seeds, index: int, factor: str, level: Any, baseline: Any, combos, metric: str) -> dict[str, Any]:
    def key(value: Any, combo: tuple) -> tuple:
        return (*combo[:index], value, *combo[index:])

    diffs, level_means, base_means, pairs = [], [], [], 0
    for seed in seeds:
        here = [(cells[(key(level, c), seed)], cells[(key(baseline, c), seed)]) for c in combos
                if (key(level, c), seed) in cells and (key(baseline, c), seed) in cells]
        if not here:
            continue
        ys = np.array(here)
        pairs += len(here)
        level_means.append(ys[:, 0].mean())
        base_means.append(ys[:, 1].mean())
        diffs.append(ys[:, 0].mean() - ys[:, 1].mean())
    d = without_rounding(np.array(diffs), max((abs(v) for v in (*level_means, *base_means)), default=0.0))
    n = d.size
    mean, lo, hi = t_interval(d)
    p = paired_p(d)
    return {"factor": factor, "level": level, "baseline": baseline, "metric": metric,
            "level_mean": float(np.mean(level_means)) if n else math.nan,
            "baseline_mean": float(np.mean(base_means)) if n else math.nan,
            "difference": mean, "ci_low": lo, "ci_high": hi, "n_seeds": n, "pairs": pairs,
            "sd": float(d.std(ddof=1)) if n >= 2 else math.nan, "p_value": p,
            "clear": bool(n >= 2 and (lo > 0 or hi < 0))}


ROUNDING = 1e-12  # a per-seed contrast this small against the values it comes from is float64's rounding


def without_rounding(d: np.ndarray, scale: float) -> np.ndarray:
    """Per-seed contrasts `d` with those no larger than float rounding of values of size `scale` set to 0: two
    variants whose results are the same up to the order of a sum (5.6e-17 on losses of 0.3) differ by nothing,
    where a t interval over contrasts that do not vary would call the rounding a clear difference with p = 0."""
    return np.where(np.abs(d) <= ROUNDING * scale, 0.0, d)


def t_interval(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t interval of per-seed values: (mean, low, high); low and high are NaN with fewer than two
    values, the mean too with none."""
    d = np.asarray(values, dtype=float)
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan
    from scipy import stats  # noqa: PLC0415 - keeps `python -m core` start-up free of scipy

    half = float(stats.t.ppf(0.975, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def effects_sentences(effects_df: pd.DataFrame) -> list[str]:
    """Each effect in words, e.g. "bce_with_logits instead of bce lowers final val loss by 0.21 (95% CI 0.15 to
    0.27)" or "BatchNorm made no clear difference to final val loss (+0.012, 95% CI -0.03 to 0.05 includes 0)",
    with what divergence left out (`diverged_note`)."""
    return [effect_sentence(row) + diverged_note(row) for row in effects_df.to_dict("records")]


def effect_sentence(row: Mapping[str, Any]) -> str:
    """One row of `effects` in words, divergence aside (`diverged_note`)."""
    choice = choice_words(row["factor"], row["level"], row["baseline"])
    metric = metric_words(row["metric"])
    d, lo, hi, n = row["difference"], row["ci_low"], row["ci_high"], row["n_seeds"]
    if n < 2 or not math.isfinite(lo):
        level, base = (_ended_count(row, side) for side in ("level", "baseline"))
        if (level and level[0] == level[1]) or (base and base[0] == base[1]):  # every run of a side diverged
            return f"{choice} cannot be judged on {metric}: a diverged run has none."
        return (f"{choice} cannot be judged on {metric} yet: that needs results at both levels for at least "
                f"2 seeds (there {'is' if n == 1 else 'are'} {n}).")
    if row["clear"]:
        verb = "lowers" if d < 0 else "raises"
        a, b = (-hi, -lo) if d < 0 else (lo, hi)
        return f"{choice} {verb} {metric} by {fmt(abs(d))} (95% CI {fmt(a)} to {fmt(b)})."
    return (f"{choice} made no clear difference to {metric} ({'+' if d > 0 else ''}{fmt(d)}, "
            f"95% CI {fmt(lo)} to {fmt(hi)} includes 0).")


def diverged_note(row: Mapping[str, Any]) -> str:
    """" 6 of 6 runs at lr 0.3 diverged, none at lr 0.01: lr 0.3 diverges more often, which ..." where runs
    diverged; "" where none did (or the row does not say). A diverged run's result is left out of the means, so
    a difference between the survivors says nothing of a level that mostly diverges."""
    counts = {side: _ended_count(row, side) for side in ("level", "baseline")}
    if not any(c and c[0] for c in counts.values()):
        return ""
    words = {side: level_words(row["factor"], row[side]) for side in counts}
    sides = sorted((side for side in counts if counts[side]), key=lambda side: not counts[side][0])
    parts = []
    for side in sides:
        diverged, ended = counts[side]
        if not diverged:
            parts.append(f"none at {words[side]}")
        elif diverged == ended:
            parts.append(f"{'all ' if ended > 1 else ''}{ended} run{'s' if ended > 1 else ''} at {words[side]}")
        else:
            parts.append(f"{diverged} of {ended} runs at {words[side]}")
    text = " " + parts[0][0].upper() + parts[0][1:] + " diverged" + (f", {parts[1]}" if len(parts) > 1 else "")
    judged = row["n_seeds"] >= 2 and math.isfinite(row["ci_low"])
    level, base = counts["level"], counts["baseline"]
    if level and base and level[0] * base[1] != base[0] * level[1]:  # their rates differ
        worse = words["level"] if level[0] * base[1] > base[0] * level[1] else words["baseline"]
        return text + f": {worse} diverges more often" + (
            ", which the difference leaves out: it compares the runs that finished." if judged else ".")
    return text + ("; the difference compares the runs that finished." if judged else ".")


def _ended_count(row: Mapping[str, Any], side: str) -> tuple[int, int] | None:
    """(diverged, ended) runs at `side` ("level" or "baseline"), or None where the row does not say."""
    diverged, ended = row.get(f"{side}_diverged"), row.get(f"{side}_ended")
    if diverged is None or ended is None or not ended or (isinstance(ended, float) and math.isnan(ended)):
        return None
    return int(diverged), int(ended)


def level_words(factor: str, value: Any) -> str:
    """One level of a field in a sentence: "lr 0.3", "elu", "batchnorm=true"."""
    if isinstance(value, (bool, np.bool_)):
        return f"{factor}={'true' if value else 'false'}"
    if isinstance(value, str):
        return value
    return f"{factor} {format_value(_field_value(factor, value))}"


def _field_value(factor: str, value: Any) -> Any:
    """`value` as the field holds it: a frame's column of an integer field may have come back as floats (100.0)."""
    if factor in field_names() and field_kind(factor) == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def metric_words(metric: str) -> str:
    """How a result column reads in a sentence: "final val loss", "the area under the exact val loss curve"."""
    found = judge_for_column(metric)
    return _METRIC_WORDS.get(metric) or (found.words if found else str(metric).replace("_", " "))


def fmt(x: float) -> str:
    """A number for a sentence: 3 significant digits from 1 up, 2 decimals from 0.1, 2 significant below."""
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("infinity" if x > 0 else "-infinity")
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 1:
        return f"{x:.3g}"
    if a >= 0.1:
        return f"{x:.2f}"
    return "0" if a == 0 else f"{x:.2g}"


def choice_words(factor: str, level: Any, baseline: Any) -> str:
    if isinstance(level, (bool, np.bool_)) and isinstance(baseline, (bool, np.bool_)):
        name = FLAG_WORDS.get(factor, f"{factor}=true")
        return name if level else NO_FLAG_WORDS.get(factor, f"{factor}=false instead of true")
    if isinstance(level, str) and isinstance(baseline, str):
        return f"{level} instead of {baseline}"
    level, baseline = (format_value(_field_value(factor, v)) for v in (level, baseline))
    return f"{factor} {level} instead of {baseline}"


# ---------------------------------------------------------------------- helpers
def check_factors(frame: pd.DataFrame, factors: Sequence[str] | None) -> list[str]:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame; got {type(frame).__name__}")
    found = factor_columns(frame) if factors is None else list(factors)
    _require(frame, found)
    return found


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no column {missing[0]!r}; it has: {', '.join(map(str, frame.columns))}")


def _groups(frame: pd.DataFrame, factors: list[str]):
    """(factor values, rows) per variant, in order of first appearance."""
    keys = variant_keys(frame, factors)
    for key in dict.fromkeys(keys):
        yield key, frame[[k == key for k in keys]]


def variant_keys(frame: pd.DataFrame, factors: list[str]) -> list[tuple]:
    """Each row's factor values as a tuple (its variant)."""
    if not factors:
        return [()] * len(frame)
    return list(frame[factors].itertuples(index=False, name=None))


def _label(group: pd.DataFrame, factors: list[str], key: tuple) -> str:
    if "variant" in group and group["variant"].notna().any():
        return str(group["variant"].dropna().iloc[0])
    return variant_label(dict(zip(factors, key)))


def levels_in(column: pd.Series) -> list[Any]:
    return list(dict.fromkeys(column))


def _finite(values: pd.Series) -> np.ndarray:
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]
