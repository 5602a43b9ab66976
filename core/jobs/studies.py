"""A study in the store: finding or creating it, what running it again would do, its progress, cancelling it,
and its runs as one table.

A study is a `StudySpec` (core.jobs.spec) stored with `Store.create_study`; its runs are ordinary runs with
`study_id` set. Which (variant, seed) a run is comes from the run's stored config, the values of the varied fields
and `seed` (the rest of a study's configs is the base, the same for all). The run name says the same for people
("bn-act-loss: batchnorm=true activation=elu loss=bce seed=2") but is only a label. Running a study is
`core.jobs.scheduler`; the `study` command is `core.cli.study`.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from core.analysis.effects import SUMMARY_METRICS, ranking, variant_label
from core.analysis.judges import CURVE_COLUMNS, CURVE_KEY, curve_measures, judge_warning
from core.analysis.judges import judge as find_judge
from core.analysis.statistics import StudyStatistics, study_statistics
from core.experiment.config import ConfigError, ExperimentConfig
from core.experiment.data import read_csv
from core.jobs.devices import check_device
from core.jobs.spec import Slot, StudySpec, expand, run_key, slot_key, spec_difference
from core.store import STATUSES, Run, RunNotFound, Store, Study, StudyNotFound, pid_alive


RESULT_STATUSES = ("finished", "diverged", "failed")  # outcomes: kept when a study runs again


RERUN_STATUSES = ("interrupted", "cancelled")  # replaced by a fresh run when a study runs again


def find_study(store: Store, name_or_id: str) -> Study | None:
    """The stored study named `name_or_id`, else the one with that id (as the command line and the pages name a
    study); None when there is neither."""
    found = store.get_study_by_name(name_or_id)
    if found is None and name_or_id.strip().isascii() and name_or_id.strip().isdigit():
        try:
            found = store.get_study(int(name_or_id))
        except StudyNotFound:
            found = None
    return found


def open_study(store: Store, spec: StudySpec) -> int:
    """The id of the stored study named `spec.name`, created if new. A stored study of that name with another
    grid is a ConfigError on `name`: a name always means one grid."""
    for _ in range(2):
        found = store.get_study_by_name(spec.name)
        if found is not None:
            stored = StudySpec.from_dict(found.spec)
            if stored != spec:
                raise ConfigError("name", f"a study named {spec.name!r} already exists with another grid "
                                          f"({spec_difference(stored, spec)}); give this one another name")
            return found.id
        spec.check_varied_fields()  # a new grid only: a stored study is read as it was made
        try:
            return store.create_study(spec.name, spec.to_dict())
        except ValueError:  # created by another process just now: look again
            continue
    raise ConfigError("name", f"could not create the study {spec.name!r}")


def load_spec(store: Store, study_id: int) -> StudySpec:
    return StudySpec.from_dict(store.get_study(study_id).spec)


@dataclass(frozen=True)
class Plan:
    """What running a study again would do."""

    todo: list[Slot]  # to train, in order
    kept: dict[tuple, Run]  # (variant values, seed) -> its run with a result
    busy: dict[tuple, Run]  # (variant values, seed) -> its run still running elsewhere
    replace: dict[tuple, list[int]]  # (variant values, seed) -> interrupted/cancelled run ids to delete first


def plan_study(store: Store, study_id: int, *, host: str | None = None,
               alive: Callable[[int], bool] = pid_alive) -> Plan:
    """Marks dead runs interrupted, then sorts the study's slots into kept, busy and to-do (`sort_slots`)."""
    store.mark_interrupted(host=host or socket.gethostname(), pid_alive=alive)
    return sort_slots(store, study_id)


def sort_slots(store: Store, study_id: int) -> Plan:
    """The study's slots sorted into kept, busy and to-do, as the store has them now: `plan_study` without
    marking dead runs first (it writes nothing). A page's estimate of what running it again would train: a run
    whose process died without a word still counts as busy here, until a launch marks it interrupted."""
    spec = load_spec(store, study_id)
    runs: dict[tuple, list[Run]] = {}
    for run in store.list_runs(study_id=study_id):
        key = run_key(spec, run.config)
        if key is not None:
            runs.setdefault(key, []).append(run)
    kept, busy, replace, todo = {}, {}, {}, []
    for slot in expand(spec):
        key = slot_key(slot.variant, slot.seed)
        have = runs.get(key, [])
        results = [r for r in have if r.status in RESULT_STATUSES]
        running = [r for r in have if r.status == "running"]
        if results:
            kept[key] = max(results, key=lambda r: r.id)
        elif running:
            busy[key] = running[0]
        else:
            replace[key] = [r.id for r in have if r.status in RERUN_STATUSES]
            todo.append(slot)
    return Plan(todo=todo, kept=kept, busy=busy, replace=replace)


def progress(store: Store, study_id: int) -> dict[str, int]:
    """Runs of the study per status (every status, 0 when none), plus "total" (the grid's size) and "pending"
    (grid slots without a run yet). For a progress bar: (total - pending - running) / total."""
    spec = load_spec(store, study_id)
    counts = {s: 0 for s in STATUSES}
    slots = set()
    for run in store.list_runs(study_id=study_id):
        counts[run.status] += 1
        key = run_key(spec, run.config)
        if key is not None:
            slots.add(key)
    return counts | {"total": spec.size, "pending": spec.size - len(slots)}


def cancel_study(store: Store, study_id: int) -> list[int]:
    """Cancel the study: its running runs stop at their trainers' next flush (about a second) and its scheduler
    starts no more runs. Returns the ids of the runs that were running. The cancel flag is set on every run of
    the study, finished ones included (where it changes nothing), so a scheduler that is between two runs sees
    it too. Running the study again later reruns the cancelled runs."""
    store.get_study(study_id)
    running = []
    for run in store.list_runs(study_id=study_id):
        try:
            store.request_cancel(run.id)
        except RunNotFound:
            continue
        if run.status == "running":
            running.append(run.id)
    return running


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def study_frame(store: Store, study_id: int, *, curves: bool = False) -> pd.DataFrame:
    """One row per run of the study, in the grid's order (variant by variant, then seed): run_id, name, status,
    variant (its label), one column per varied field (named like the config field, values as the config holds
    them), seed, the summary metrics of `core.effects.SUMMARY_METRICS` (NaN where a run has none), wall_time_s
    and error (its first line). Runs that are not part of the grid come last. The input of `ranking` and
    `effects`; `frame.set_index("run_id")` is the `runs` frame for `core.charts.comparison_figure`.

    With `curves`, also `core.analysis.judges.CURVE_COLUMNS` (best_exact_epoch, exact_loss_area), computed from
    each run's stored val_loss_logits series (one value per epoch, read whole)."""
    spec = load_spec(store, study_id)
    variant_index = {tuple(v.values()): i for i, v in enumerate(spec.variants())}
    rows = []
    for run in store.list_runs(study_id=study_id):
        key = run_key(spec, run.config)
        variant = dict(zip(spec.vary, key[0])) if key else {k: run.config.get(k) for k in spec.vary}
        seed = key[1] if key else run.config.get("seed")
        rows.append({"run_id": run.id, "name": run.name, "status": run.status, "variant": variant_label(variant),
                     **variant, "seed": seed, **{m: _number(run.summary.get(m)) for m in SUMMARY_METRICS},
                     "wall_time_s": _number(run.duration_s),
                     "error": run.error.splitlines()[0] if run.error else None,
                     "_order": (variant_index.get(key[0], len(variant_index)) if key else len(variant_index),
                                seed if isinstance(seed, int) else 0, run.id)})
    rows.sort(key=lambda r: r["_order"])
    columns = ["run_id", "name", "status", "variant", *spec.vary, "seed", *SUMMARY_METRICS, "wall_time_s", "error"]
    frame = pd.DataFrame(rows, columns=columns)
    for name in spec.vary:  # keep None, True and (64, 64) as they are (pandas would turn None into NaN)
        frame[name] = pd.Series([r[name] for r in rows], dtype=object, index=frame.index)
    if curves:
        measures = curve_columns(store, list(frame["run_id"]))
        for i, name in enumerate(CURVE_COLUMNS):
            frame.insert(frame.columns.get_loc("wall_time_s"), name,
                         [measures.get(r, (math.nan, math.nan))[i] for r in frame["run_id"]])
    return frame


def curve_columns(store: Store, run_ids: list[int]) -> dict[int, tuple[float, float]]:
    """run id -> (best epoch, area) of its exact val loss curve (`core.analysis.judges.curve_measures`)."""
    if not run_ids:
        return {}
    series = store.metrics_frame(run_ids, keys=[CURVE_KEY])
    return {int(run_id): curve_measures(group["epoch"], group["value"])
            for run_id, group in series.groupby("run_id", sort=False)}


def judged_statistics(store: Store, study_id: int, judge: str | None = None, *,
                      difference: float | None = None) -> tuple[pd.DataFrame, StudyStatistics]:
    """The study frame (with the curve columns when the judge needs them) and its statistics on `judge`
    (`core.analysis.statistics.study_statistics`; default: the exact val loss)."""
    found = find_judge(judge)
    frame = study_frame(store, study_id, curves=found.needs_curves)
    return frame, study_statistics(frame, found, difference=difference)


def summarize(store: Store, study_id: int, judge: str | None = None, *,
              difference: float | None = None) -> dict[str, Any]:
    """The study in one object (what `study --json` prints): id, name, the grid, run counts, the judge (name and
    the metric it reads), the ranking by it, its effects and interactions (Holm-adjusted p-values, detectable
    differences, and with `difference` the seeds it needs), the sentences (interactions first) and the seeds
    figures in words."""
    study = store.get_study(study_id)
    frame, stats = judged_statistics(store, study_id, judge, difference=difference)
    return {"id": study.id, "name": study.name, "spec": study.spec, "runs": len(frame),
            "expected_runs": load_spec(store, study_id).size, "status_counts": _counts(frame),
            "judge": stats.judge.name, "metric": stats.judge.column,
            "ranking": ranking(frame, metric=stats.judge.column).to_dict("records"),
            "effects": stats.effects.to_dict("records"), "interactions": stats.interactions.to_dict("records"),
            "holm_family": stats.family, "sentences": stats.sentences, "difference": difference,
            "seeds": stats.power_sentences, "warning": judge_warning(stats.judge.name, list(study.spec["vary"]))}


@dataclass(frozen=True)
class StudyProgress:
    """A stored study and its runs per status (what `progress` returns)."""

    study: Study
    counts: dict[str, int]

    @property
    def done(self) -> int:
        """Grid slots with a result: finished, diverged or failed."""
        return sum(self.counts.get(s, 0) for s in RESULT_STATUSES)

    @property
    def complete(self) -> bool:
        return self.done >= self.counts["total"]


def list_studies_with_progress(store: Store) -> list[StudyProgress]:
    """Every stored study, newest first, with its runs per status."""
    return [StudyProgress(study, progress(store, study.id)) for study in store.list_studies()]


def existing_study(store: Store, spec: StudySpec) -> int | None:
    """The id of the stored study that running `spec` would resume, None when it would start a new one. A stored
    study of that name with another grid is the ConfigError on `name` that `open_study` raises. Creates nothing."""
    found = store.get_study_by_name(spec.name)
    if found is None:
        return None
    stored = StudySpec.from_dict(found.spec)
    if stored != spec:
        raise ConfigError("name", f"a study named {spec.name!r} already exists with another grid "
                                  f"({spec_difference(stored, spec)}); give this one another name")
    return found.id


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["status"].value_counts().items()}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def check_runnable(spec: StudySpec) -> None:
    """What validation cannot see but would fail every run: a CSV that does not load, a device that is absent."""
    seen_csv, seen_device = set(), set()
    for variant in spec.variants():
        cfg = ExperimentConfig.from_dict({**spec.base, **variant})
        if cfg.dataset == "csv" and (cfg.csv_path, cfg.csv_label) not in seen_csv:
            seen_csv.add((cfg.csv_path, cfg.csv_label))
            read_csv(cfg.csv_path, cfg.csv_label)
        if cfg.device not in ("auto", "cpu") and cfg.device not in seen_device:
            seen_device.add(cfg.device)
            check_device(cfg.device)
