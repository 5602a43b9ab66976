"""Compare's "Difference between two groups": split the compared runs into two groups (by a config field's values,
by tags, or by picking runs) and give the difference of one summary number of their curves with a 95% CI.

Pure functions from store records (`core.store.Run`) to groups, a Welch interval (`core.analysis.groups`) and
words; the page only lays them out. Group values are compared as text (`format_value`: true/false, as run names
and legends write them), so [64, 64] and (64, 64) are one value.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from core.analysis.effects import fmt, format_value
from core.analysis.groups import GroupDifference, welch_difference
from core.presentation.formatting import as_float
from core.store import Run

GROUP_KINDS: dict[str, str] = {"field": "Config field", "tag": "Tag", "pick": "Picked runs"}

# What the groups are compared on: summary key -> label. The exact val loss first: one yardstick for every loss.
GROUP_METRICS: dict[str, str] = {
    "final_val_loss_logits": "final exact val loss",
    "final_val_loss": "final val loss (each run's own)",
    "best_val_loss": "best val loss",
    "final_val_acc": "final val accuracy",
    "final_val_auc": "final val AUC",
    "best_val_epoch": "best epoch",
    "final_train_loss_logits": "final exact train loss",
    "final_train_loss": "final train loss",
}


def field_values(runs: Sequence[Run], field: str) -> list[str]:
    """The values `field` takes among `runs`, as text, in order of first appearance."""
    return list(dict.fromkeys(format_value(r.config.get(field)) for r in runs))


def run_tags(runs: Sequence[Run]) -> list[str]:
    """Every tag of `runs`, in order of first appearance."""
    return list(dict.fromkeys(t for r in runs for t in r.tags))


def split_runs(runs: Sequence[Run], kind: str, a: object, b: object) -> tuple[list[Run], list[Run]]:
    """Groups A and B of `runs`. `kind` "field:NAME": the runs whose NAME (as text) is `a` / `b`; "tag": the runs
    tagged `a` / `b` (a run with both tags is in neither); "pick": the runs whose ids are in `a` / `b`."""
    if kind.startswith("field:"):
        field = kind.removeprefix("field:")
        return ([r for r in runs if format_value(r.config.get(field)) == a],
                [r for r in runs if format_value(r.config.get(field)) == b])
    if kind == "tag":
        both = {r.id for r in runs if a in r.tags and b in r.tags}
        return ([r for r in runs if a in r.tags and r.id not in both],
                [r for r in runs if b in r.tags and r.id not in both])
    if kind == "pick":
        ids_a, ids_b = set(a or ()), set(b or ())
        return [r for r in runs if r.id in ids_a], [r for r in runs if r.id in ids_b]
    raise ValueError(f"kind must be field:NAME, tag or pick; got {kind!r}")


def group_difference(group_a: Sequence[Run], group_b: Sequence[Run], metric: str) -> GroupDifference:
    """B minus A on the summary number `metric`, with Welch's 95% interval, over the finished runs with the number
    (a diverged run's last value is from before it broke, and a running one's is not final: a study's effects
    leave them out too; `left_out` counts them)."""
    return welch_difference([as_float(r.summary.get(metric)) for r in group_a if r.status == "finished"],
                            [as_float(r.summary.get(metric)) for r in group_b if r.status == "finished"])


def left_out(group_a: Sequence[Run], group_b: Sequence[Run]) -> int:
    """The runs of both groups that `group_difference` leaves out for not having finished."""
    return sum(r.status != "finished" for r in [*group_a, *group_b])


def difference_sentence(result: GroupDifference, name_a: str, name_b: str, metric: str, *,
                        unfinished: int = 0) -> str:
    """"B (3 runs) − A (3 runs): final exact val loss lower by 0.12 (95% CI 0.05 to 0.19, Welch t, p = 0.004).",
    then how many runs that did not finish were left out (`unfinished`)."""
    note = (f" {unfinished} run{'s' if unfinished != 1 else ''} that did not finish (diverged, failed, stopped or "
            "still running) left out." if unfinished else "")
    return _sentence(result, name_a, name_b, metric) + note


def _sentence(result: GroupDifference, name_a: str, name_b: str, metric: str) -> str:
    label = GROUP_METRICS.get(metric, metric.replace("_", " "))
    head = f"{name_b} ({_runs(result.n_b)}) against {name_a} ({_runs(result.n_a)})"
    if result.n_a < 2 or result.n_b < 2:
        return (f"{head}: each group needs at least 2 finished runs with a {label} for an interval "
                f"(means {fmt(result.mean_b)} and {fmt(result.mean_a)}).")
    d, lo, hi = result.difference, result.ci_low, result.ci_high
    p = f"p = {result.p_value:.2g}" if math.isfinite(result.p_value) else "p not defined"
    if result.clear:
        a, b = (-hi, -lo) if d < 0 else (lo, hi)
        return (f"{head}: {label} {'lower' if d < 0 else 'higher'} by {fmt(abs(d))} (95% CI {fmt(a)} to {fmt(b)}; "
                f"Welch t, unpaired, {p}).")
    return (f"{head}: no clear difference in {label} ({'+' if d > 0 else ''}{fmt(d)}, 95% CI {fmt(lo)} to "
            f"{fmt(hi)} includes 0; Welch t, unpaired, {p}).")


def groups_table(result: GroupDifference, name_a: str, name_b: str) -> pd.DataFrame:
    """The two groups' n, mean and sd, and the difference with its interval, for a small table."""
    return pd.DataFrame([
        {"group": name_a, "runs": result.n_a, "mean": result.mean_a, "sd": result.sd_a},
        {"group": name_b, "runs": result.n_b, "mean": result.mean_b, "sd": result.sd_b},
        {"group": "B − A", "runs": math.nan, "mean": result.difference,
         "sd": math.nan, "95% CI low": result.ci_low, "95% CI high": result.ci_high, "p (Welch)": result.p_value},
    ], columns=["group", "runs", "mean", "sd", "95% CI low", "95% CI high", "p (Welch)"])


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"
