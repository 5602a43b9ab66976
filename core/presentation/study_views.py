"""A study as the Studies page shows it: its grid and progress in words, and its ranking, effects and runs as
tables with the varied values as text."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from core.analysis.effects import format_value as study_value
from core.analysis.judges import CURVE_COLUMNS, JUDGES
from core.jobs.spec import StudySpec
from core.jobs.studies import RESULT_STATUSES, StudyProgress
from core.presentation.formatting import status_label


# The ranked metrics, with their labels (the runs list and the ranking show them).
STUDY_METRICS: dict[str, str] = {"final_val_loss": "final val loss", "best_val_loss": "best val loss",
                                 "final_val_auc": "final val AUC"}


def judged_format(column: str) -> str:
    """The ranking's number format for a judged column: four decimals for a loss, accuracy or AUC, as the study
    metrics beside it (0.3180 beside 0.3180, not 0.318), four significant digits for an epoch or an area."""
    return "%.4g" if column in CURVE_COLUMNS else "%.4f"


# What the effects can be judged on: judge name -> label (core.analysis.judges).
JUDGE_LABELS: dict[str, str] = {name: j.label for name, j in JUDGES.items()}


def grid_text(spec: StudySpec) -> str:
    """"batchnorm: false, true × loss: bce, bce_with_logits × 3 seeds = 12 runs"."""
    parts = [f"{name}: {', '.join(study_value(v) for v in values)}" for name, values in spec.vary.items()]
    return " × ".join([*parts, f"{spec.seeds} seed{'s' if spec.seeds != 1 else ''}"]) + f" = {spec.size} runs"


def study_fraction(counts: Mapping[str, int]) -> float:
    """Share of the grid with a result (finished, diverged or failed), 0..1."""
    total = counts.get("total", 0)
    done = sum(counts.get(s, 0) for s in RESULT_STATUSES)
    return min(done / total, 1.0) if total else 1.0


def study_progress_text(counts: Mapping[str, int]) -> str:
    """"All 8 runs finished.", "All 8 runs done: 7 finished, 1 diverged." or "3 of 8 runs done · 2 running ·
    1 cancelled · 2 not started"."""
    total = counts.get("total", 0)
    done = sum(counts.get(s, 0) for s in RESULT_STATUSES)
    results = ", ".join(f"{counts[s]} {s}" for s in RESULT_STATUSES if counts.get(s))
    if done >= total:
        if counts.get("finished", 0) >= total:
            return f"All {total} runs finished."
        return f"All {total} runs done: {results}."
    parts = [f"{done} of {total} runs done" + (f" ({results})" if done and results != f"{done} finished" else "")]
    parts += [f"{counts[s]} {s}" for s in ("running", "cancelled", "interrupted") if counts.get(s)]
    if counts.get("pending"):
        parts.append(f"{counts['pending']} not started")
    return " · ".join(parts)


def study_active(counts: Mapping[str, int], *, scheduler_alive: bool) -> bool:
    """Whether the study is training: a run is running, or its scheduler is alive with runs still to do (it
    creates them one at a time; once every run has a result it is only wrapping up)."""
    return counts.get("running", 0) > 0 or (scheduler_alive and study_fraction(counts) < 1)


def study_label(item: StudyProgress) -> str:
    """How the study picker names a study: "#3 bn-act-loss · 24/24 done" (or "· 5 running")."""
    running = item.counts.get("running", 0)
    return f"#{item.study.id} {item.study.name} · {item.done}/{item.counts['total']} done" + (
        f" · {running} running" if running else "")


def study_group_fields(factors: Sequence[str]) -> list[str]:
    """What the study's curves are grouped by: its varied fields; a study that varies nothing groups all its
    seeds into one line by a field they share."""
    return list(factors) or ["dataset"]


def ranking_view(table: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """`core.effects.ranking` for the page: indexed by rank, the varied values as text (true/false, [64, 64]),
    the variant label left out (the columns say it)."""
    out = table.drop(columns=["variant"]).set_index("rank")
    for name in factors:
        out[name] = out[name].map(study_value)
    return out


def effects_view(table: pd.DataFrame) -> pd.DataFrame:
    """`core.effects.effects` for the page: levels as text, the metric column left out (the heading says it)."""
    out = table.drop(columns=["metric"]).copy()
    for name in ("level", "baseline"):
        out[name] = out[name].map(study_value)
    return out


def interactions_view(table: pd.DataFrame) -> pd.DataFrame:
    """`core.analysis.interactions.interactions` (with statistics' Holm and seeds columns) for the page: the two
    fields as "batchnorm × loss", the levels and the baselines as text ("true × bce_with_logits"), the metric left
    out."""
    out = table.drop(columns=["metric"]).copy()
    for name in ("fields", "levels", "baselines"):
        joiner = (lambda v: " × ".join(map(str, v))) if name == "fields" else \
            (lambda v: " × ".join(study_value(x) for x in v))
        out[name] = out[name].map(joiner)
    return out


def judged_ranking_view(table: pd.DataFrame, factors: Sequence[str], metric: str) -> pd.DataFrame:
    """`ranking_view` of a ranking by `metric` (`ranking(frame, metric=...)`): the judged metric's mean and
    95% CI first, then the other ranked metrics."""
    out = ranking_view(table, factors)
    judged = [f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"]
    rest = [c for c in out.columns if c not in judged and c != f"{metric}_sd"]
    first = [c for c in rest if c in factors or c in ("runs", "n", "diverged", "failed")]
    return out[first + judged + [c for c in rest if c not in first]]


def study_runs_view(frame: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """`core.studies.study_frame` for the page's list of runs: indexed by run id, the status with its icon, the
    varied values as text, the seed, the headline results, the wall time and the error's first line."""
    columns = ["status", *factors, "seed", *STUDY_METRICS, "wall_time_s", "error"]
    out = frame.set_index("run_id")[columns].copy()
    out.index.name = "id"
    out["status"] = out["status"].map(status_label)
    for name in factors:
        out[name] = out[name].map(study_value)
    return out
