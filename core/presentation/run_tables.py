"""The runs as tables: the Runs page's table, its filters and edits, a run's config and the Compare page's
summary, config-difference and findings tables, and the metric pickers (a large selection's choices are in
`core.presentation.selection`).

Pure functions from store records (`core.store.Run`) to pandas frames; no Streamlit and no torch, so every page's
logic is tested without a browser."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from core.analysis.effects import change_text
from core.analysis.findings import findings
from core.experiment.config import GROUPS, ExperimentConfig, field_comment, field_names
from core.presentation.formatting import (as_float, form_order, format_duration, format_value, natural_key, run_label,
                                          status_label)
from core.store import STATUSES, Run


# The config fields every run table shows, in this order (the rest are in the run's detail view).
KEY_FIELDS: tuple[str, ...] = ("dataset", "hidden", "batchnorm", "activation", "loss", "clamp_eps", "optimizer",
                               "lr", "seed")


# Summary metrics of the run table: summary key -> column label.
TABLE_METRICS: dict[str, str] = {
    "final_val_loss": "final val loss",
    "best_val_loss": "best val loss",
    "final_val_acc": "val acc",
    "final_val_auc": "AUC",
    "peak_clamp_frac": "peak clamp_frac",
}


# The summary table of the Compare page: a few more than the run table.
SUMMARY_METRICS: dict[str, str] = {
    "steps": "steps",
    "final_train_loss": "final train loss",
    "final_train_loss_logits": "final exact train loss",
    **TABLE_METRICS,
    "best_val_epoch": "best epoch",
    "best_val_acc": "best val acc",
    "peak_clamp_wrong_frac": "peak clamp_wrong_frac",
    "peak_grad_vanish_frac": "peak grad_vanish_frac",
    "diverged_step": "diverged at step",
}


# Metrics offered first in pickers, in this order; any other key follows in natural order.
PREFERRED_METRICS: tuple[str, ...] = ("train_loss", "val_loss", "train_loss_logits", "val_loss_logits", "val_acc",
                                      "val_auc", "train_acc", "clamp_frac", "clamp_wrong_frac", "grad_vanish_frac",
                                      "grad_norm", "update_norm", "logit_abs_max", "pred_pos_rate")


DEFAULT_METRICS: tuple[str, ...] = ("train_loss", "val_loss")


def progress(run: Run) -> float | None:
    """Share of the run's optimizer steps done, 0..1; None before the trainer reported its total."""
    if not run.total_steps:
        return 1.0 if run.status == "finished" else None
    return min(max(run.progress_step / run.total_steps, 0.0), 1.0)


def progress_text(run: Run) -> str:
    """'step 120 of 400 · 12 s' for the live panel."""
    if run.total_steps:
        text = f"step {run.progress_step} of {run.total_steps}"
    else:
        text = "starting…"
    duration = run.duration_s
    return text + (f" · {format_duration(duration)}" if duration is not None else "")


def outcome_text(run: Run) -> str:
    """One line on how a run ended: 'finished in 3.1 s · val loss 0.7287 · val acc 40.6%', or its error."""
    parts = [f"{run.status} after {format_duration(run.duration_s)}"]
    loss, acc = run.summary.get("final_val_loss"), run.summary.get("final_val_acc")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        parts.append(f"val loss {loss:.4f}")
    if isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc):
        parts.append(f"val acc {acc:.1%}")
    if run.error and run.status != "finished":
        parts.append(run.error.strip().splitlines()[0])
    return " · ".join(parts)


# Column labels of `runs_table`, for the page's column config.
# Results come before the config, so the numbers people sort by are visible without scrolling.
TABLE_LABELS: dict[str, str] = {
    "name": "name", "status": "status", "progress": "progress", "tags": "tags", "created": "created",
    "duration_s": "duration", **TABLE_METRICS, "dataset": "data", "hidden": "hidden", "batchnorm": "BN",
    "activation": "activation", "loss": "loss", "clamp_eps": "clamp eps", "optimizer": "optimizer", "lr": "lr",
    "seed": "seed", "device": "device", "notes": "notes",
}


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run, indexed by run id (newest first, as given): status, dates, duration, device, the key
    config fields and the summary metrics. Numbers stay numbers (NaN when missing) so the table sorts right."""
    rows = []
    for run in runs:
        cfg = run.config
        row: dict[str, Any] = {
            "name": run.name,
            "status": status_label(run.status),
            "progress": progress(run),
            "tags": list(run.tags),
            "created": run.created_at,
            "duration_s": run.duration_s,
            **{key: as_float(run.summary.get(key)) for key in TABLE_METRICS},
            "device": run.device or "",
            "dataset": cfg.get("dataset", ""),
            "hidden": format_value(cfg.get("hidden", [])),
            "batchnorm": bool(cfg.get("batchnorm", False)),
            "activation": cfg.get("activation", ""),
            "loss": cfg.get("loss", ""),
            "clamp_eps": as_float(cfg.get("clamp_eps")),
            "optimizer": cfg.get("optimizer", ""),
            "lr": as_float(cfg.get("lr")),
            "seed": cfg.get("seed"),
        }
        row["notes"] = run.notes
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index([r.id for r in runs], name="id"), columns=list(TABLE_LABELS))
    frame["duration_s"] = pd.to_numeric(frame["duration_s"], errors="coerce")
    frame["progress"] = pd.to_numeric(frame["progress"], errors="coerce")
    if len(frame):
        frame["created"] = pd.to_datetime(frame["created"], utc=True)
    return frame


# How the run tables show a share (as the summary table's cells: `summary_cell`), on `in_percent`'s columns.
# Streamlit's own "percent" format drops trailing zeros, so that one column read "92%" beside "40.63%".
PERCENT_FORMAT = "%.1f%%"


def in_percent(frame: pd.DataFrame) -> pd.DataFrame:
    """`runs_table`'s frame with its shares (accuracy, clamp fraction) as percentages, for PERCENT_FORMAT: numbers
    still, so that the column sorts as numbers."""
    shown = frame.copy()
    for key in [k for k in TABLE_METRICS if k in shown and ("acc" in k or "frac" in k)]:
        shown[key] = shown[key] * 100
    return shown


def table_key(prefix: str, ids: Iterable[int]) -> str:
    """A widget key that changes whenever the rows (ids, in order) change.

    Streamlit reports a table's row selection as row positions; keying the table by its rows means a stale
    selection can never point at another run after a run is added, deleted or filtered out."""
    digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:10]
    return f"{prefix}_{digest}"


def filter_options(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Config fields whose value differs between `runs`, in form order, each with its sorted values (as
    `format_value` strings). Fields that are the same for every run need no filter."""
    out: dict[str, list[str]] = {}
    for name in form_order():
        values = {format_value(run.config.get(name)) for run in runs}
        if len(values) > 1:
            out[name] = sorted(values, key=natural_key)
    return out


def filter_runs(runs: Sequence[Run], *, statuses: Iterable[str] = (), config: Mapping[str, Iterable[str]] | None = None,
                text: str = "", studies: Iterable[int] = ()) -> list[Run]:
    """The runs that match every filter; an empty filter matches everything.

    statuses: any of these. studies: runs of any of these study ids.
    config: field -> allowed `format_value` strings. text: every word must occur in the
    name or a tag, case-insensitively, except '#12', which is run 12 (not #120); a search of one number alone
    ('12') also finds run 12."""
    wanted_status = set(statuses)
    unknown = wanted_status - set(STATUSES)
    if unknown:
        raise ValueError(f"unknown status {sorted(unknown)[0]!r}; allowed: {', '.join(STATUSES)}")
    wanted_config = {name: set(values) for name, values in (config or {}).items() if values}
    bad = sorted(set(wanted_config) - set(field_names()))
    if bad:
        raise ValueError(f"unknown config field {bad[0]!r}; allowed: {', '.join(field_names())}")
    wanted_studies = {int(i) for i in studies}
    words = text.lower().split()
    one_number = len(words) == 1 and words[0].isascii() and words[0].isdigit()

    def matches(run: Run, haystack: str, word: str) -> bool:
        if word[:1] == "#" and word[1:].isascii() and word[1:].isdigit():
            return run.id == int(word[1:]) or word in haystack
        return word in haystack or (one_number and run.id == int(word))

    out = []
    for run in runs:
        if wanted_status and run.status not in wanted_status:
            continue
        if wanted_studies and run.study_id not in wanted_studies:
            continue
        if any(format_value(run.config.get(name)) not in allowed for name, allowed in wanted_config.items()):
            continue
        haystack = " ".join([run.name, *run.tags]).lower()
        if not all(matches(run, haystack, word) for word in words):
            continue
        out.append(run)
    return out


def clean_tags(tags: Iterable[Any] | None) -> list[str]:
    """Tags from an edited cell: stripped, without blanks and duplicates, in order."""
    out: list[str] = []
    for tag in tags or ():
        text = str(tag).strip()
        if text and text not in out:
            out.append(text)
    return out


def edit_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """The editable part of the selected runs: name, tags and notes (id and status for orientation)."""
    return pd.DataFrame({"status": [status_label(r.status) for r in runs], "name": [r.name for r in runs],
                         "tags": [list(r.tags) for r in runs], "notes": [r.notes for r in runs]},
                        index=pd.Index([r.id for r in runs], name="id"))


def edit_changes(before: pd.DataFrame, after: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """What the user changed in an `edit_frame`: run id -> {column: new value} for name, tags and notes.
    Tags are compared cleaned (`clean_tags`), a missing note is ''."""
    changes: dict[int, dict[str, Any]] = {}
    for run_id in before.index:
        if run_id not in after.index:
            continue
        old, new = before.loc[run_id], after.loc[run_id]
        change: dict[str, Any] = {}
        name = "" if _missing(new["name"]) else str(new["name"])
        if name != old["name"]:
            change["name"] = name
        tags = clean_tags(None if _missing(new["tags"]) else list(new["tags"]))
        if tags != clean_tags(old["tags"]):
            change["tags"] = tags
        notes = "" if _missing(new["notes"]) else str(new["notes"])
        if notes != old["notes"]:
            change["notes"] = notes
        if change:
            changes[int(run_id)] = change
    return changes


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA: what an emptied cell comes back as."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def chart_runs(runs: Sequence[Run]) -> pd.DataFrame:
    """The `runs` frame of `core.charts.comparison_figure`: indexed by run_id, `name` (unique: '#id name') and
    one column per config field (missing fields get the default)."""
    defaults = ExperimentConfig().to_dict()
    rows = [{"name": run_label(run), **{f: run.config.get(f, defaults[f]) for f in field_names()}} for run in runs]
    return pd.DataFrame(rows, index=pd.Index([r.id for r in runs], name="run_id"),
                        columns=["name", *field_names()])


def diverged_ids(runs: Sequence[Run]) -> set[int]:
    """The ids of the runs that stopped as diverged (`comparison_figure`'s `diverged`: a star where they stopped)."""
    return {r.id for r in runs if r.status == "diverged"}


def varying_fields(runs: Sequence[Run]) -> list[str]:
    """Config fields whose value differs between `runs`, in form order (choices for colour, dash, group)."""
    return [name for name in form_order() if len({format_value(r.config.get(name)) for r in runs}) > 1]


def config_differences(runs: Sequence[Run]) -> pd.DataFrame:
    """Only the config fields that differ between `runs`, one row per run, values as short strings."""
    fields = varying_fields(runs)
    return pd.DataFrame({"name": [r.name for r in runs],
                         **{f: [format_value(r.config.get(f)) for r in runs] for f in fields}},
                        index=pd.Index([r.id for r in runs], name="id"))


# Summary columns that count (steps, epochs): whole numbers in a file, not 320.0
WHOLE_SUMMARY_METRICS = ("steps", "best_val_epoch", "diverged_step")


def summary_table(runs: Sequence[Run], *, for_file: bool = False) -> pd.DataFrame:
    """The selected runs side by side: status, duration and the summary metrics, None where a run has none and
    NaN where it measured NaN (a float column when every run has the metric). For a file (`for_file`), the status
    is the plain word (no icon) and the counts are whole numbers."""
    frame = pd.DataFrame({"name": [r.name for r in runs],
                          "status": [r.status if for_file else status_label(r.status) for r in runs]},
                         index=pd.Index([r.id for r in runs], name="id"))
    for key in ["duration_s", *SUMMARY_METRICS]:
        values = [_number(r.duration_s if key == "duration_s" else r.summary.get(key)) for r in runs]
        if for_file and key in WHOLE_SUMMARY_METRICS and all(v is None or float(v).is_integer() for v in values):
            frame[key] = pd.array([None if v is None else int(v) for v in values], dtype="Int64")
        elif None not in values:  # every run has it: a float column (NaN in it is a value a run measured)
            frame[key] = np.asarray(values, dtype=float)
        else:  # None where a run has none, apart from NaN: a file writes it empty, the page "–"
            frame[key] = pd.Series(values, index=frame.index, dtype=object)
    return frame


def _number(value: Any) -> float | None:
    """A summary value as a float (NaN and ±inf kept: a run measured them), None where there is none."""
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)


def summary_cell(key: str, value: Any) -> str:
    """How the summary table shows one value: shares as percentages, counts whole, the rest to 4 significant digits
    (1.593e+09, not 1593994112), "–" where a run has none, NaN and ±inf (values a run measured) as they are."""
    if value is None or value is pd.NA:
        return "–"
    if not math.isfinite(value):
        return str(float(value)).replace("nan", "NaN")
    if key == "duration_s":
        return f"{value:.1f} s"
    if key in WHOLE_SUMMARY_METRICS and float(value).is_integer():
        return f"{int(value):,}"
    if "acc" in key or "frac" in key:
        return f"{value:.1%}"
    return f"{value:.4g}"


def summary_display(frame: pd.DataFrame) -> pd.DataFrame:
    """`summary_table`'s frame as the page shows it: each numeric cell as `summary_cell` writes it. Text, because
    the grid writes a whole number past 2**53 out in full (4.2680185646481605e+25) and NaN as "None", whatever a
    Styler says; the files (`summary_table(for_file=True)`) keep the numbers."""
    out = frame.copy()
    for key in ["duration_s", *SUMMARY_METRICS]:
        out[key] = [summary_cell(key, v) for v in frame[key].tolist()]
    return out


def metric_options(keys: Iterable[str]) -> list[str]:
    """Metric keys in picker order: the loss and the diagnostics first, the rest (per-layer norms...) after."""
    keys = list(dict.fromkeys(keys))
    first = [k for k in PREFERRED_METRICS if k in keys]
    rest = sorted((k for k in keys if k not in first), key=natural_key)
    return first + rest


def default_metrics(available: Sequence[str]) -> list[str]:
    """train_loss and val_loss when there; else the first available metric."""
    chosen = [m for m in DEFAULT_METRICS if m in available]
    return chosen or list(available[:1])


def config_table(config: Mapping[str, Any]) -> pd.DataFrame:
    """A run's whole config, grouped like the form: group, field, value, default, changed, what it means."""
    defaults = ExperimentConfig().to_dict()
    rows = []
    for group, names in GROUPS.items():
        for name in names:
            value = config.get(name, defaults[name])
            rows.append({"group": group, "field": name, "value": format_value(value),
                         "default": format_value(defaults[name]),
                         "changed": format_value(value) != format_value(defaults[name]),
                         "meaning": field_comment(name)})
    return pd.DataFrame(rows)


def cache_token(runs: Sequence[Run]) -> tuple[tuple[int, str, int], ...]:
    """Changes whenever any of the runs logs more or changes status: the key of cached metric frames."""
    return tuple((r.id, r.status, r.progress_step) for r in runs)


def findings_table(runs: Sequence[Run], *, severities: Sequence[str] = ("problem", "warning")) -> pd.DataFrame:
    """Compare's findings: one row per finding of these `severities`, run by run (causes first, as `findings`
    orders them): run label, severity, finding, cause, fix (as `field=value`, comma-separated)."""
    rows = []
    for run in runs:
        for f in findings(run):
            if f.severity in severities:
                rows.append({"run": run_label(run), "severity": f.severity, "finding": f.title, "cause": f.cause,
                             "fix": change_text(f.fix or {})})
    return pd.DataFrame(rows, columns=["run", "severity", "finding", "cause", "fix"])
