"""What the dashboard pages show, as plain data: run tables, filters, the run selection in the URL, form values.

Pure functions from store records (`core.store.Run`) and config fields to pandas frames, strings and back; no
Streamlit and no torch here, so every page's logic is tested without a browser. The pages only lay these out.
The Studies page's form, progress and tables are at the end.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
from sqlalchemy import make_url

from core import PROJECT_ROOT
from core.config import (GROUPS, PRESETS, ConfigError, ExperimentConfig, choices, coerce, field_comment,
                         field_kind, field_names)
from core.data import load_dataset
from core.effects import format_value as study_value
from core.store import STATUSES, Run
from core.studies import MAX_SEEDS, RESULT_STATUSES, STUDIES, StudyProgress, StudySpec, auto_name, parse_vary

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
# Plain Unicode symbols, not emoji: they render in table cells with any font (DejaVu has them all).
STATUS_ICONS: dict[str, str] = {"running": "↻", "finished": "✓", "diverged": "↯", "failed": "✗", "cancelled": "■",
                                "interrupted": "⚠"}
# Metrics offered first in pickers, in this order; any other key follows in natural order.
PREFERRED_METRICS: tuple[str, ...] = ("train_loss", "val_loss", "train_loss_logits", "val_loss_logits", "val_acc",
                                      "val_auc", "train_acc", "clamp_frac", "clamp_wrong_frac", "grad_vanish_frac",
                                      "grad_norm", "update_norm", "logit_abs_max", "pred_pos_rate")
DEFAULT_METRICS: tuple[str, ...] = ("train_loss", "val_loss")
# What each preset shows, in a sentence (the dashboard's preset picker and one-click launches).
PRESET_NOTES: dict[str, str] = {
    "article-example": "The article's program made runnable: Linear(10, 1) → ReLU → Sigmoid with BCELoss on random "
                       "labels. Nothing to learn, and every prediction is ≥ 0.5.",
    "article-relu-sigmoid": "The same model on learnable data: the ReLU before the sigmoid still floors every "
                            "probability at 0.5.",
    "article-fixed": "The fix: no output ReLU, raw logits into BCEWithLogitsLoss.",
    "mlp-bn-logits": "A small MLP with BatchNorm and the exact loss: a sensible starting point.",
    "saturating-bce": "Sigmoid + BCELoss pushed into saturation by a large learning rate: wrong predictions hit the "
                      "-100 clamp with zero gradient.",
}
ARTICLE_PRESETS: tuple[str, ...] = tuple(p for p in PRESETS if p.startswith("article-"))
# Generated data sets are checked by building them when they are this small (cheap); bigger ones by the trainer.
_CHECK_DATA_MAX_VALUES = 2_000_000


# ---------------------------------------------------------------------- formatting
def format_value(value: Any) -> str:
    """A config value as one short string for tables and filters (booleans as True/False)."""
    return study_value(value, cli=False)


def format_duration(seconds: float | None) -> str:
    """'0.8 s', '42 s', '3 min 05 s', '2 h 04 min'; '–' when unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_label(status: str) -> str:
    """The status with its icon, e.g. '✓ finished'."""
    return f"{STATUS_ICONS.get(status, '•')} {status}"


def run_label(run: Run) -> str:
    """How a run is named in pickers and legends: '#12 mlp-bn-logits'."""
    return f"#{run.id} {run.name}"


def _number(value: Any) -> float:
    """A summary value as a float for a table column; missing or non-numeric is NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


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


# ---------------------------------------------------------------------- the runs table
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
            **{key: _number(run.summary.get(key)) for key in TABLE_METRICS},
            "device": run.device or "",
            "dataset": cfg.get("dataset", ""),
            "hidden": format_value(cfg.get("hidden", [])),
            "batchnorm": bool(cfg.get("batchnorm", False)),
            "activation": cfg.get("activation", ""),
            "loss": cfg.get("loss", ""),
            "clamp_eps": _number(cfg.get("clamp_eps")),
            "optimizer": cfg.get("optimizer", ""),
            "lr": _number(cfg.get("lr")),
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


def table_key(prefix: str, ids: Iterable[int]) -> str:
    """A widget key that changes whenever the rows (ids, in order) change.

    Streamlit reports a table's row selection as row positions; keying the table by its rows means a stale
    selection can never point at another run after a run is added, deleted or filtered out."""
    digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:10]
    return f"{prefix}_{digest}"


# ---------------------------------------------------------------------- filters
def filter_options(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Config fields whose value differs between `runs`, in form order, each with its sorted values (as
    `format_value` strings). Fields that are the same for every run need no filter."""
    out: dict[str, list[str]] = {}
    for name in _form_order():
        values = {format_value(run.config.get(name)) for run in runs}
        if len(values) > 1:
            out[name] = sorted(values, key=_natural_key)
    return out


def filter_runs(runs: Sequence[Run], *, statuses: Iterable[str] = (), config: Mapping[str, Iterable[str]] | None = None,
                text: str = "") -> list[Run]:
    """The runs that match every filter; an empty filter matches everything.

    statuses: any of these. config: field -> allowed `format_value` strings. text: every word must occur in the
    name, a tag or the id ('#12' or '12'), case-insensitively."""
    wanted_status = set(statuses)
    unknown = wanted_status - set(STATUSES)
    if unknown:
        raise ValueError(f"unknown status {sorted(unknown)[0]!r}; allowed: {', '.join(STATUSES)}")
    wanted_config = {name: set(values) for name, values in (config or {}).items() if values}
    bad = sorted(set(wanted_config) - set(field_names()))
    if bad:
        raise ValueError(f"unknown config field {bad[0]!r}; allowed: {', '.join(field_names())}")
    words = text.lower().split()
    out = []
    for run in runs:
        if wanted_status and run.status not in wanted_status:
            continue
        if any(format_value(run.config.get(name)) not in allowed for name, allowed in wanted_config.items()):
            continue
        haystack = " ".join([run.name, *run.tags, f"#{run.id}"]).lower()
        if any(word not in haystack for word in words):
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


# ---------------------------------------------------------------------- the selection in the URL
class SelectionError(ValueError):
    """A `?runs=` value that is not a comma-separated list of run ids."""


_ID_HINT = "use run ids separated by commas, e.g. ?runs=3,7,12"


def split_run_ids(value: str | Sequence[str] | None) -> tuple[list[int], list[str]]:
    """Lenient parse of `?runs=3,7,12`: the ids in order (duplicates dropped) and one message per bad piece.

    Commas and spaces separate ids; a repeated parameter (a list) counts as one list; blanks are ignored."""
    if value is None:
        return [], []
    text = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
    ids: list[int] = []
    problems: list[str] = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        if token.isdigit() and int(token) > 0:
            if int(token) not in ids:
                ids.append(int(token))
        else:
            problems.append(f"{token!r} is not a run id: {_ID_HINT}")
    return ids, problems


def parse_run_ids(value: str | Sequence[str] | None) -> list[int]:
    """Strict parse of `?runs=3,7,12`; raises `SelectionError` naming every bad piece."""
    ids, problems = split_run_ids(value)
    if problems:
        raise SelectionError("; ".join(problems))
    return ids


def format_run_ids(ids: Iterable[int]) -> str:
    """The inverse of `parse_run_ids`: '3,7,12'."""
    return ",".join(str(int(i)) for i in dict.fromkeys(ids))


@dataclass(frozen=True)
class Selection:
    ids: tuple[int, ...]  # ids that exist, in the order asked for
    problems: tuple[str, ...]  # one sentence per bad or unknown id


def resolve_selection(value: str | Sequence[str] | None, known_ids: Iterable[int]) -> Selection:
    """`?runs=` checked against the store: bad pieces and ids of runs that do not exist become problems."""
    ids, problems = split_run_ids(value)
    known = set(known_ids)
    missing = [i for i in ids if i not in known]
    if missing:
        listed = ", ".join(f"#{i}" for i in missing)
        problems.append(f"no run {listed}: deleted, or from another database" if len(missing) == 1 else
                        f"no runs {listed}: deleted, or from another database")
    return Selection(tuple(i for i in ids if i in known), tuple(problems))


# ---------------------------------------------------------------------- compare: runs, summary, differences
def chart_runs(runs: Sequence[Run]) -> pd.DataFrame:
    """The `runs` frame of `core.charts.comparison_figure`: indexed by run_id, `name` (unique: '#id name') and
    one column per config field (missing fields get the default)."""
    defaults = ExperimentConfig().to_dict()
    rows = [{"name": run_label(run), **{f: run.config.get(f, defaults[f]) for f in field_names()}} for run in runs]
    return pd.DataFrame(rows, index=pd.Index([r.id for r in runs], name="run_id"),
                        columns=["name", *field_names()])


def varying_fields(runs: Sequence[Run]) -> list[str]:
    """Config fields whose value differs between `runs`, in form order (choices for colour, dash, group)."""
    return [name for name in _form_order() if len({format_value(r.config.get(name)) for r in runs}) > 1]


def config_differences(runs: Sequence[Run]) -> pd.DataFrame:
    """Only the config fields that differ between `runs`, one row per run, values as short strings."""
    fields = varying_fields(runs)
    return pd.DataFrame({"name": [r.name for r in runs],
                         **{f: [format_value(r.config.get(f)) for r in runs] for f in fields}},
                        index=pd.Index([r.id for r in runs], name="id"))


def summary_table(runs: Sequence[Run]) -> pd.DataFrame:
    """The selected runs side by side: status, duration and the summary metrics (NaN where a run has none)."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"name": run.name, "status": status_label(run.status), "duration_s": run.duration_s}
        row.update({key: _number(run.summary.get(key)) for key in SUMMARY_METRICS})
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index([r.id for r in runs], name="id"),
                         columns=["name", "status", "duration_s", *SUMMARY_METRICS])
    frame["duration_s"] = pd.to_numeric(frame["duration_s"], errors="coerce")
    return frame


def metric_options(keys: Iterable[str]) -> list[str]:
    """Metric keys in picker order: the loss and the diagnostics first, the rest (per-layer norms...) after."""
    keys = list(dict.fromkeys(keys))
    first = [k for k in PREFERRED_METRICS if k in keys]
    rest = sorted((k for k in keys if k not in first), key=_natural_key)
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


# ---------------------------------------------------------------------- the train form
def form_values(cfg: ExperimentConfig) -> dict[str, Any]:
    """The form's widget values for `cfg`: bools and ints as they are, floats and widths as editable text."""
    out: dict[str, Any] = {}
    for name, value in cfg.to_dict().items():
        kind = field_kind(name)
        if kind in ("float", "optional_float"):
            out[name] = "" if value is None else repr(float(value))
        elif kind == "widths":
            out[name] = ", ".join(str(w) for w in value)
        else:
            out[name] = value
    return out


def config_from_form(values: Mapping[str, Any], *, check_data: bool = True) -> tuple[ExperimentConfig | None,
                                                                                      dict[str, str]]:
    """Read the form: `(config, {})` when every field is valid, else `(None, {field: message})`.

    Every field is read and checked, so all bad fields are reported at once, not only the first: a field that
    fails is set back to its default and the rest is validated again. With `check_data`, a CSV (and a small
    generated data set) is also built, so a broken file or a split that leaves no validation samples is reported
    on its field before any run exists."""
    defaults = ExperimentConfig().to_dict()
    errors: dict[str, str] = {}
    data: dict[str, Any] = {}
    for name in field_names():
        raw = values.get(name, defaults[name])
        try:
            data[name] = coerce(name, raw)
        except ConfigError as exc:
            errors[name] = _message(exc)
            data[name] = defaults[name]
    cfg = None
    while cfg is None:
        try:
            cfg = ExperimentConfig.from_dict(data)
        except ConfigError as exc:
            if exc.field in errors or exc.field not in data:  # its default fails too (e.g. csv without a file)
                errors.setdefault(exc.field, _message(exc))
                break
            errors[exc.field] = _message(exc)
            data[exc.field] = defaults[exc.field]
    if errors:
        return None, errors
    if check_data and (cfg.dataset == "csv" or cfg.n_samples * cfg.n_features <= _CHECK_DATA_MAX_VALUES) \
            and cfg.dataset != "breast_cancer":
        try:
            load_dataset(cfg)
        except ConfigError as exc:
            return None, {exc.field: _message(exc)}
    return cfg, {}


def error_message(exc: ConfigError) -> str:
    """The ConfigError's message without the leading 'field: ', for showing under the field's widget."""
    return _message(exc)


def _message(exc: ConfigError) -> str:
    """The ConfigError's message without the leading 'field: ' (the form shows it under the field)."""
    text = str(exc)
    prefix = f"{exc.field}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def uploads_dir(db_url: str) -> Path:
    """Where uploaded CSV files go: an `uploads` folder next to the SQLite database file (the project root for
    other databases)."""
    url = make_url(db_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        return Path(database).expanduser().absolute().parent / "uploads"
    return PROJECT_ROOT / "uploads"


def save_upload(data: bytes, filename: str, folder: Path) -> Path:
    """Save an uploaded file under `folder` as '<content hash>-<name>.csv' and return its path; the same content
    is saved once, so reruns of the page do not pile up copies."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).stem).strip("._") or "data"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{stem[:60]}.csv"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


# ---------------------------------------------------------------------- studies
# What the effects can be judged on (the ranked metrics), with their labels.
STUDY_METRICS: dict[str, str] = {"final_val_loss": "final val loss", "best_val_loss": "best val loss",
                                 "final_val_auc": "final val AUC"}
_VARY_HINTS = {"int": "e.g. 32, 64", "float": "e.g. 0.01, 0.1", "optional_float": "e.g. none, 1e-7",
               "widths": "e.g. [32], [64, 64]", "str": "values separated by commas"}


@dataclass(frozen=True)
class StudyStart:
    """A starting point of the study form: a built-in study, a preset, or the defaults."""

    label: str
    base: ExperimentConfig
    vary: dict[str, tuple[Any, ...]]
    seeds: int


def study_starts() -> dict[str, StudyStart]:
    """The form's starting points by key: "study:NAME" for each built-in study, "preset:NAME", "defaults"."""
    out = {f"study:{name}": StudyStart(f"{name} (built-in study, {spec.size} runs)",
                                       ExperimentConfig.from_dict(spec.base), dict(spec.vary), spec.seeds)
           for name, spec in STUDIES.items()}
    out |= {f"preset:{name}": StudyStart(f"preset {name}", cfg, {}, 3) for name, cfg in PRESETS.items()}
    out["defaults"] = StudyStart("the defaults", ExperimentConfig(), {}, 3)
    return out


def vary_fields() -> list[str]:
    """The config fields a study can vary, in form order: all but `seed` (the study sets it)."""
    return [name for name in _form_order() if name != "seed"]


def vary_choices(name: str) -> list[Any] | None:
    """The values to pick from when varying `name` (False/True, or its choices); None: typed as text."""
    kind = field_kind(name)
    if kind == "bool":
        return [False, True]
    if kind == "choice":
        return list(choices(name))
    return None


def vary_widget_value(name: str, values: Sequence[Any]) -> list[Any] | str:
    """The value of the widget that lists `name`'s values: the values themselves for a pick list, else text as
    `--vary` takes it ("0.01, 0.1", "[32], [64, 64]")."""
    if vary_choices(name) is not None:
        return list(values)
    return ", ".join(study_value(v) for v in values)


def vary_placeholder(name: str) -> str:
    return _VARY_HINTS.get(field_kind(name), "values separated by commas")


def vary_initial(name: str, form_value: Any) -> list[Any] | str:
    """The values a field starts with when it is added to the grid, from its base form value: both for a
    yes/no field (the base one first: the first value is the baseline), the base choice, or the base as text."""
    kind = field_kind(name)
    if kind == "bool":
        return [bool(form_value), not bool(form_value)]
    if kind == "choice":
        return [form_value] if form_value in choices(name) else []
    text = "" if form_value is None else str(form_value).strip()
    return f"[{text}]" if kind == "widths" else text


@dataclass(frozen=True)
class StudyDraft:
    """The study form read: the spec when everything is valid, else the errors by field."""

    spec: StudySpec | None
    errors: dict[str, str]  # field -> message: a base field, a varied field, "name", "seeds" or "vary"
    variants: int  # combinations of the values given (counted even when some are bad)
    seeds: int | None  # None when the number of seeds is bad

    @property
    def runs(self) -> int | None:
        return None if self.seeds is None else self.variants * self.seeds


def study_draft(*, name: str, base: Mapping[str, Any], vary: Mapping[str, Any], seeds: Any,
                check_data: bool = True) -> StudyDraft:
    """Read the study form: `base` holds the base config's form values (as `config_from_form` takes them),
    `vary` maps each varied field to its picked values (a list) or its typed values ("0.01, 0.1"), in order;
    an empty `name` is the built-in study's whose grid this is, else derived from the grid (`core.studies.auto_name`,
    as the command line names it). Every field is checked, so all bad
    inputs are reported at once, each on its field; then the whole grid is validated by `StudySpec`."""
    cfg, base_errors = config_from_form(base, check_data=check_data)
    errors = dict(base_errors)
    values: dict[str, list[Any]] = {}
    for field_name, raw in vary.items():
        if isinstance(raw, str):
            if not raw.strip():
                errors[field_name] = f"give at least one value ({vary_placeholder(field_name)})"
                values[field_name] = []
                continue
            try:
                given = parse_vary([f"{field_name}={raw}"])[field_name]
            except ConfigError as exc:
                errors[exc.field] = _message(exc)
                values[field_name] = []
                continue
        else:
            given = list(raw or [])
            if not given:
                errors[field_name] = "pick at least one value"
        values[field_name] = given
        coerced: list[Any] = []
        for value in given:
            try:
                coerced.append(coerce(field_name, value))
            except ConfigError as exc:
                errors.setdefault(field_name, _message(exc))
                break
            if coerced[-1] in coerced[:-1]:
                errors.setdefault(field_name, f"the value {study_value(coerced[-1])} is given twice")
                break
    n_seeds: int | None
    try:
        n_seeds = coerce("seed", seeds)
        if not 1 <= n_seeds <= MAX_SEEDS:
            raise ConfigError("seeds", "")
    except ConfigError:
        n_seeds = None
        errors["seeds"] = f"must be a whole number from 1 to {MAX_SEEDS}, got {seeds!r}"
    variants = math.prod(len(v) for v in values.values())
    if errors or cfg is None or n_seeds is None:
        return StudyDraft(None, errors, variants, n_seeds)
    try:
        spec = StudySpec(name=name.strip() or auto_name(cfg.to_dict(), values, n_seeds), base=cfg.to_dict(),
                         vary=values, seeds=n_seeds)
    except ConfigError as exc:
        return StudyDraft(None, {exc.field: _message(exc)}, variants, n_seeds)
    if not name.strip():  # the grid of a built-in study, unchanged, is that study: it has its name
        for builtin in STUDIES.values():
            if spec.to_dict() | {"name": builtin.name} == builtin.to_dict():
                spec = builtin
    return StudyDraft(spec, {}, variants, n_seeds)


def run_count_text(draft: StudyDraft) -> str:
    """"**8 runs**: 4 variants × 2 seeds" (markdown), what a launch would train."""
    variants = f"{draft.variants} variant{'s' if draft.variants != 1 else ''}"
    if draft.seeds is None:
        return f"{variants} × ? seeds"
    runs = draft.variants * draft.seeds
    seeds = f"{draft.seeds} seed{'s' if draft.seeds != 1 else ''}"
    return f"**{runs} run{'s' if runs != 1 else ''}**: {variants} × {seeds}"


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


def resolve_study(value: str | Sequence[str] | None, known_ids: Iterable[int]) -> tuple[int | None, str | None]:
    """`?study=3` checked against the store: (the id, None), or (None, what is wrong with it); (None, None)
    when the URL names no study."""
    text = ",".join(value) if isinstance(value, (list, tuple)) else (value or "")
    text = text.strip()
    if not text:
        return None, None
    if not (text.isdigit() and int(text) > 0):
        return None, f"{text!r} is not a study id: use a number, e.g. ?study=3"
    if int(text) not in set(known_ids):
        return None, f"no study #{int(text)}: deleted, or from another database"
    return int(text), None


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


def escape_markdown(text: str) -> str:
    """`text` shown literally by st.markdown in the middle of a line: the characters markdown (and Streamlit's
    LaTeX and colour syntax) could read as markup anywhere are escaped."""
    return re.sub(r"([\\`*_\[\]<>|~$:])", r"\\\1", text)


# ---------------------------------------------------------------------- helpers
def _form_order() -> list[str]:
    return [name for names in GROUPS.values() for name in names]


def _natural_key(text: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text)) if p)
