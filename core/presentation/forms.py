"""The dashboard's forms read and checked: the Train form (a config from widget values, every bad field reported
at once, uploaded CSVs) and the Studies form (a base config, the fields to vary, the seeds)."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlalchemy import make_url

from core import PROJECT_ROOT
from core.analysis.effects import format_value as study_value
from core.analysis.effects import variant_label
from core.experiment.config import PRESETS, ConfigError, ExperimentConfig, choices, coerce, field_kind, field_names
from core.experiment.data import load_dataset
from core.jobs.devices import check_device
from core.jobs.spec import MAX_SEEDS, MAX_WORKERS, STUDIES, StudySpec, auto_name, expand, parse_vary
from core.presentation.formatting import form_order
from core.training.groups import tasks


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
            errors[name] = error_message(exc)
            data[name] = defaults[name]
    cfg = None
    while cfg is None:
        try:
            cfg = ExperimentConfig.from_dict(data)
        except ConfigError as exc:
            if exc.field in errors or exc.field not in data:  # its default fails too (e.g. csv without a file)
                errors.setdefault(exc.field, error_message(exc))
                break
            errors[exc.field] = error_message(exc)
            data[exc.field] = defaults[exc.field]
    if errors:
        return None, errors
    if check_data and (cfg.dataset == "csv" or cfg.n_samples * cfg.n_features <= _CHECK_DATA_MAX_VALUES) \
            and cfg.dataset != "breast_cancer":
        try:
            load_dataset(cfg)
        except ConfigError as exc:
            return None, {exc.field: error_message(exc)}
    if check_data and cfg.device not in ("auto", "cpu"):  # as `train --device cuda` refuses on a CPU machine
        try:
            check_device(cfg.device)
        except ConfigError as exc:
            return None, {exc.field: error_message(exc)}
    return cfg, {}


def error_message(exc: ConfigError) -> str:
    """The ConfigError's message without the leading 'field: ', for showing under the field's widget."""
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
    return [name for name in form_order() if name != "seed"]


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
    errors: dict[str, str]  # field -> message: a base field, a varied field, "name", "seeds", "workers" or "vary"
    variants: int  # combinations of the values given (counted even when some are bad)
    seeds: int | None  # None when the number of seeds is bad

    @property
    def runs(self) -> int | None:
        return None if self.seeds is None else self.variants * self.seeds


def study_draft(*, name: str, base: Mapping[str, Any], vary: Mapping[str, Any], seeds: Any,
                check_data: bool = True, workers: Any = 1) -> StudyDraft:
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
                errors[exc.field] = error_message(exc)
                values[field_name] = []
                continue
        else:
            given = list(raw or [])
            if not given:
                errors[field_name] = "pick at least one value"
        values[field_name] = given
        coerced: list[Any] = []
        bad: list[str] = []  # every bad value of the field, said at once
        for value in given:
            try:
                coerced.append(coerce(field_name, value))
            except ConfigError as exc:
                bad.append(error_message(exc))
                continue
            try:
                if cfg is not None:
                    cfg.replace(**{field_name: coerced[-1]})  # in range, as a run of the grid validates it
            except ConfigError as exc:
                bad.append(f"{error_message(exc)} (in the variant {variant_label({field_name: coerced[-1]})})")
            if coerced[-1] in coerced[:-1]:
                bad.append(f"the value {study_value(coerced[-1])} is given twice")
        if bad and field_name not in errors:
            errors[field_name] = "; ".join(dict.fromkeys(bad))
    n_seeds: int | None
    try:
        n_seeds = coerce("seed", seeds)
        if not 1 <= n_seeds <= MAX_SEEDS:
            raise ConfigError("seeds", "")
    except ConfigError:
        n_seeds = None
        errors["seeds"] = f"must be a whole number from 1 to {MAX_SEEDS}, got {seeds!r}"
    wrong = workers_error(workers)
    if wrong:
        errors["workers"] = wrong
    variants = math.prod(len(v) for v in values.values())
    if errors or cfg is None or n_seeds is None:
        return StudyDraft(None, errors, variants, n_seeds)
    try:
        spec = StudySpec(name=name.strip() or auto_name(cfg.to_dict(), values, n_seeds), base=cfg.to_dict(),
                         vary=values, seeds=n_seeds)
        spec.check_varied_fields()  # said on its field before Launch, as launching would refuse it
    except ConfigError as exc:
        return StudyDraft(None, {exc.field: error_message(exc)}, variants, n_seeds)
    if not name.strip():  # the grid of a built-in study, unchanged, is that study: it has its name
        for builtin in STUDIES.values():
            if spec.to_dict() | {"name": builtin.name} == builtin.to_dict():
                spec = builtin
    return StudyDraft(spec, {}, variants, n_seeds)


def workers_error(workers: Any) -> str | None:
    """What is wrong with the form's number of worker processes, or None when it is one a study can start."""
    if isinstance(workers, int) and not isinstance(workers, bool) and 1 <= workers <= MAX_WORKERS:
        return None
    return f"must be a whole number from 1 to {MAX_WORKERS}, got {workers!r}"


def population_text(draft: StudyDraft, workers: int, todo: list[ExperimentConfig] | None = None) -> str | None:
    """How a launch on `workers` local worker processes trains the runs (`groups.tasks`, as the
    study's scheduler splits them): "Trains as 2 batched models of 12 runs each, side by side." and the runs that
    train on their own (those that differ from every other in a field a population does not batch: widths, data,
    batch size, ...); None without a valid spec. A resumed study splits only the runs it still has to train:
    `todo`, their configs (`studies.sort_slots`), where the draft resumes one; "Nothing left to train: ..." when
    none is left."""
    if draft.spec is None:
        return None
    if todo is not None and not todo:
        return "Nothing left to train: every run of this grid has a result or is running."
    return split_text(todo if todo is not None else [slot.cfg for slot in expand(draft.spec)], workers)


def split_text(cfgs: list[ExperimentConfig], workers: int) -> str | None:
    """How the local scheduler trains `cfgs` on `workers` worker processes (`groups.tasks`, its own split), in
    words: "Trains as 2 batched models of 12 runs each, side by side."; None for a single run."""
    parts = tasks(cfgs, max(1, workers))
    sizes = sorted((len(t) for t in parts if len(t) > 1), reverse=True)
    alone = sum(1 for t in parts if len(t) == 1)
    if not sizes:
        return "Each run trains on its own, one per worker at a time." if alone > 1 else None
    if len(set(sizes)) == 1:
        models = (f"{len(sizes)} batched models of {sizes[0]} runs each" if len(sizes) > 1
                  else f"one batched model of {sizes[0]} runs")
    else:
        models = f"{len(sizes)} batched models of {', '.join(map(str, sizes[:-1]))} and {sizes[-1]} runs"
    rest = "" if not alone else f"; {alone} run{'s' if alone != 1 else ''} on {'their' if alone != 1 else 'its'} own"
    return f"Trains as {models}, side by side{rest}."


def run_count_text(draft: StudyDraft) -> str:
    """"**8 runs**: 4 variants × 2 seeds" (markdown), what a launch would train."""
    variants = f"{draft.variants} variant{'s' if draft.variants != 1 else ''}"
    if draft.seeds is None:
        return f"{variants} × ? seeds"
    runs = draft.variants * draft.seeds
    seeds = f"{draft.seeds} seed{'s' if draft.seeds != 1 else ''}"
    return f"**{runs} run{'s' if runs != 1 else ''}**: {variants} × {seeds}"
