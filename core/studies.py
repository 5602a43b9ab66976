"""Studies: a named grid of config variants, each trained over several seeds, stored as ordinary runs.

A `StudySpec` is a base config, the fields to vary with their values, and a number of seeds N (seeds 0..N-1
replace the base's `seed`). Every value is coerced and every combination validated when the spec is built, so a
bad grid is reported, naming the field, before anything runs. The spec is stored with `Store.create_study`; its
runs are ordinary runs with `study_id` set.

Which (variant, seed) a run is: read from the run's stored config, the values of the varied fields and `seed`
(the rest of a study's configs is the base, the same for all). The run name says the same for people
("bn-act-loss: batchnorm=true activation=elu loss=bce seed=2") but is only a label.

Running a study (`resume_study`, which is also how it starts) first marks runs whose process died as
interrupted, then keeps every (variant, seed) that already has a result (finished, diverged or failed: those
are outcomes) or a live running run, and trains the rest: those without a run, and those whose run was
interrupted or cancelled. Such a run is deleted (with its partial metrics) just before it is rerun, so a
study never holds two runs of one (variant, seed). Runs are created one at a time, just before a worker takes
them, in seed-major order (every variant's seed 0 first), so a study stopped halfway has every variant.

Workers are local processes ("spawn"), one per CPU core by default, each training one run at a time through
`StoreReporter`, so metrics are in the store as they are measured. A worker that dies takes only its own run
with it (recorded as interrupted) and is replaced; a run that fails or diverges is recorded as such. One
scheduler per study at a time: a second one skips runs that are running but may duplicate queued ones.
Cancelling (`cancel_study`) sets the cancel flag on the study's runs: the running ones stop at their trainers'
next flush, and the scheduler, seeing the flag on a run it started, starts no more runs.

From the command line (`add_study_parser`, `cmd_study`): `--study NAME` resumes a stored study or starts a
built-in one (`STUDIES`); without it, the base config comes from `--preset`/`--config`/flags exactly as for
`train` and the grid from `--vary`, and the study is named after its grid, so the same command resumes it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shlex
import signal
import socket
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence, TextIO

import pandas as pd

from core.config import ConfigError, ExperimentConfig, coerce, field_names
from core.effects import SUMMARY_METRICS, effects, effects_sentences, format_value, ranking, variant_label
from core.store import INTERRUPTED_ERROR, Run, RunNotFound, Store, Study, pid_alive

DEFAULT_SEEDS = 3
MAX_SEEDS = 100
MAX_RUNS = 10_000
RESULT_STATUSES = ("finished", "diverged", "failed")  # outcomes: kept when a study runs again
RERUN_STATUSES = ("interrupted", "cancelled")  # replaced by a fresh run when a study runs again


# ---------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class StudySpec:
    name: str  # unique in the store; running a study of a stored name resumes it
    base: dict[str, Any]  # the base config, complete (ExperimentConfig.to_dict()); `seed` is replaced per run
    vary: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # field -> values; the first is the baseline
    seeds: int = DEFAULT_SEEDS  # seeds 0..seeds-1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("name", "a study needs a non-empty name")
        if len(self.name.strip()) > 255:
            raise ConfigError("name", "must be at most 255 characters")
        try:
            seeds = coerce("seed", self.seeds)
        except ConfigError:
            raise ConfigError("seeds", f"must be a whole number from 1 to {MAX_SEEDS}, got {self.seeds!r}") from None
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError("seeds", f"must be a whole number from 1 to {MAX_SEEDS}, got {self.seeds!r}")
        base = ExperimentConfig.from_dict(self.base)
        vary: dict[str, tuple[Any, ...]] = {}
        for name, values in dict(self.vary).items():
            if name == "seed":
                raise ConfigError("seed", "is set by the study (seeds 0..N-1); give the number of seeds instead")
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise ConfigError(name, f"the values to vary must be a list, got {values!r}")
            coerced = tuple(coerce(name, v) for v in values)
            if not coerced:
                raise ConfigError(name, "needs at least one value to vary over")
            for i, v in enumerate(coerced):
                if v in coerced[:i]:
                    raise ConfigError(name, f"the value {format_value(v)} is given twice")
            vary[name] = coerced
        n_variants = math.prod(len(v) for v in vary.values())
        if n_variants * seeds > MAX_RUNS:
            raise ConfigError("vary", f"{n_variants} variants x {seeds} seeds is {n_variants * seeds} runs; "
                                      f"at most {MAX_RUNS} are allowed")
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "base", base.to_dict())
        object.__setattr__(self, "vary", vary)
        object.__setattr__(self, "seeds", seeds)
        for variant in self.variants():  # every combination, validated before anything runs
            try:
                base.replace(**variant, seed=seeds - 1)
            except ConfigError as exc:
                reason = str(exc).split(": ", 1)[-1]
                raise ConfigError(exc.field, f"{reason} (in the variant {variant_label(variant)})") from None

    def variants(self) -> list[dict[str, Any]]:
        """Every combination of the varied values, the last field changing fastest."""
        return [dict(zip(self.vary, combo)) for combo in itertools.product(*self.vary.values())]

    @property
    def size(self) -> int:
        """Runs in the study: variants x seeds."""
        return math.prod(len(v) for v in self.vary.values()) * self.seeds

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": dict(self.base), "vary": {k: [_jsonable(v) for v in vs]
                                                                   for k, vs in self.vary.items()},
                "seeds": self.seeds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        unknown = sorted(set(data) - {"name", "base", "vary", "seeds"})
        if unknown:
            raise ConfigError(unknown[0], "unknown study field; allowed: name, base, vary, seeds")
        return cls(name=data.get("name", ""), base=dict(data.get("base") or {}), vary=dict(data.get("vary") or {}),
                   seeds=data.get("seeds", DEFAULT_SEEDS))


class Slot(NamedTuple):
    """One run of a study: the varied values, the seed, and the full config."""

    variant: dict[str, Any]
    seed: int
    cfg: ExperimentConfig


def expand(spec: StudySpec) -> list[Slot]:
    """Every (variant, seed, config) of the study, seed-major: all variants of seed 0, then of seed 1, ..."""
    base = ExperimentConfig.from_dict(spec.base)
    variants = spec.variants()
    return [Slot(variant, seed, base.replace(**variant, seed=seed)) for seed in range(spec.seeds)
            for variant in variants]


def slot_key(variant: Mapping[str, Any], seed: int) -> tuple[tuple[Any, ...], int]:
    return tuple(variant.values()), seed


def run_key(spec: StudySpec, config: Mapping[str, Any]) -> tuple[tuple[Any, ...], int] | None:
    """The (variant values, seed) a stored run config belongs to, or None if it is not one of this grid's."""
    try:
        key = tuple(coerce(name, config[name]) for name in spec.vary), coerce("seed", config["seed"])
    except (KeyError, ConfigError):
        return None
    return key if key[1] < spec.seeds and all(v in spec.vary[n] for n, v in zip(spec.vary, key[0])) else None


def run_name(spec: StudySpec, variant: Mapping[str, Any], seed: int) -> str:
    return f"{spec.name}: {variant_label(variant)} seed={seed}"[:255]


# ---------------------------------------------------------------------- named studies
def _named(name: str, base: ExperimentConfig, vary: dict[str, tuple], seeds: int = 3) -> StudySpec:
    return StudySpec(name=name, base=base.to_dict(), vary=vary, seeds=seeds)


# The canonical grid, its setting chosen by experiment: the breast-cancer data *not* standardised (raw features
# up to ~4000), a 2x64 MLP, Adam at lr 0.05, 20 epochs (1-3 s a run on a CPU core). Without BatchNorm the
# hidden activations are in the hundreds, so the logits saturate: sigmoid + BCELoss then predicts one class for
# every sample, each wrong one costs the clamped 100 with zero gradient, and it never moves (val loss 33 or 67,
# by which class the seed's initial weights favour); BCEWithLogitsLoss keeps a gradient of +-1 and learns (val
# loss ~0.2-0.35). BatchNorm rescales the hidden layer and both losses learn (~0.13-0.21). ReLU vs ELU: no clear
# difference. So BatchNorm and the loss each matter, and only through the (no BatchNorm, bce) corner.
STUDIES: dict[str, StudySpec] = {
    "bn-act-loss": _named(
        "bn-act-loss",
        ExperimentConfig(dataset="breast_cancer", standardize=False, hidden=(64, 64), optimizer="adam", lr=0.05,
                         batch_size=32, epochs=20),
        {"batchnorm": (False, True), "activation": ("relu", "elu"), "loss": ("bce", "bce_with_logits")}),
}


def named_study(name: str) -> StudySpec:
    if name not in STUDIES:
        raise ConfigError("study", f"{name!r} is not a built-in study; choose one of: {', '.join(STUDIES)}")
    return STUDIES[name]


# ---------------------------------------------------------------------- the store side
def open_study(store: Store, spec: StudySpec) -> int:
    """The id of the stored study named `spec.name`, created if new. A stored study of that name with another
    grid is a ConfigError on `name`: a name always means one grid."""
    for _ in range(2):
        found = store.get_study_by_name(spec.name)
        if found is not None:
            stored = StudySpec.from_dict(found.spec)
            if stored != spec:
                raise ConfigError("name", f"a study named {spec.name!r} already exists with another grid "
                                          f"({_spec_difference(stored, spec)}); give this one another name")
            return found.id
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
    """Marks dead runs interrupted, then sorts the study's slots into kept, busy and to-do."""
    spec = load_spec(store, study_id)
    store.mark_interrupted(host=host or socket.gethostname(), pid_alive=alive)
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
    from core.store import STATUSES  # noqa: PLC0415

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


# ---------------------------------------------------------------------- running
@dataclass(frozen=True)
class Finished:
    """One run of this scheduling pass ended: the run as stored, and how far the pass is."""

    run: Run
    slot: Slot
    done: int
    total: int


@dataclass(frozen=True)
class Outcome:
    """What one scheduling pass did."""

    study_id: int
    run_ids: list[int]  # runs trained by this pass, in the order they ended
    kept: int  # slots skipped because they already had a result
    busy: int  # slots skipped because another process was running them
    cancelled: bool  # the pass was cancelled (cancel_study, Ctrl-C, SIGTERM) and started no more runs
    remaining: int  # slots still without a result afterwards (to resume, or running elsewhere)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def run_study(store: Store, spec: StudySpec, **kwargs: Any) -> Outcome:
    """Store the study (or find it by name) and run what it still needs; see `resume_study`."""
    return resume_study(store, open_study(store, spec), **kwargs)


def resume_study(store: Store, study_id: int, *, workers: int | None = None,
                 on_finished: Callable[[Finished], None] | None = None, host: str | None = None,
                 poll_s: float = 0.25) -> Outcome:
    """Train every slot of the study that has no result yet, `workers` at a time (default one per core), and
    return when all have ended or the study was cancelled. Ctrl-C (KeyboardInterrupt) cancels the running runs
    and waits for them to stop; a second one stops them at once."""
    _check_shareable(store.url)
    host = host or socket.gethostname()
    spec = load_spec(store, study_id)
    plan = plan_study(store, study_id, host=host)
    queue = deque(plan.todo)
    total = len(queue)
    n = max(1, min(workers or default_workers(), total)) if total else 0
    threads = max(1, default_workers() // max(n, 1))
    pool = [_Worker(store.url, threads) for _ in range(n)]
    ended: list[int] = []
    launched: set[int] = set()  # runs this pass created: a cancel flag on any of them stops the pass
    stopping = False

    def settle(w: _Worker, **how: Any) -> None:
        run_id, slot = w.task
        w.task = None
        _settle(store, run_id, w, **how)
        ended.append(run_id)
        if on_finished is not None:
            run = _get(store, run_id)
            if run is not None:
                on_finished(Finished(run, slot, len(ended), total))

    try:
        while (queue and not stopping) or any(w.task for w in pool):
            try:
                for i, w in enumerate(pool):
                    if stopping or not queue:
                        break
                    if w.task is None:
                        if not w.alive():
                            w.close()
                            w = pool[i] = _Worker(store.url, threads)
                        launched.add(_dispatch(store, study_id, spec, plan, queue.popleft(), w, host))
                busy = [w for w in pool if w.task]
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=poll_s))
                for w in busy:
                    if w.conn in ready or w.proc.sentinel in ready:
                        settle(w)
                stopping = stopping or _cancelled(store, study_id, launched)
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                for w in pool:
                    if w.task:
                        _request_cancel(store, w.task[0])
    except KeyboardInterrupt:  # the second one: stop the workers now
        for w in pool:
            w.kill()
            if w.task:
                settle(w, status="cancelled", error="cancelled: the study was stopped")
    finally:
        for w in pool:
            w.close()
    left = plan_study(store, study_id, host=host)
    return Outcome(study_id=study_id, run_ids=ended, kept=len(plan.kept), busy=len(plan.busy), cancelled=stopping,
                   remaining=len(left.todo) + len(left.busy))


# ---------------------------------------------------------------------- reading a study
def study_frame(store: Store, study_id: int) -> pd.DataFrame:
    """One row per run of the study, in the grid's order (variant by variant, then seed): run_id, name, status,
    variant (its label), one column per varied field (named like the config field, values as the config holds
    them), seed, the summary metrics of `core.effects.SUMMARY_METRICS` (NaN where a run has none), wall_time_s
    and error (its first line). Runs that are not part of the grid come last. The input of `ranking` and
    `effects`; `frame.set_index("run_id")` is the `runs` frame for `core.charts.comparison_figure`."""
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
    return frame


def summarize(store: Store, study_id: int, metric: str = "final_val_loss") -> dict[str, Any]:
    """The study in one object (what `study --json` prints): id, name, the grid, run counts, ranking, effects
    and the effects in words."""
    study = store.get_study(study_id)
    frame = study_frame(store, study_id)
    table = effects(frame, metric)
    return {"id": study.id, "name": study.name, "spec": study.spec, "runs": len(frame),
            "expected_runs": load_spec(store, study_id).size, "status_counts": _counts(frame),
            "ranking": ranking(frame).to_dict("records"), "effects": table.to_dict("records"),
            "sentences": effects_sentences(table)}


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
                                  f"({_spec_difference(stored, spec)}); give this one another name")
    return found.id


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["status"].value_counts().items()}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


# ---------------------------------------------------------------------- internals
def _dispatch(store: Store, study_id: int, spec: StudySpec, plan: Plan, slot: Slot, worker: _Worker,
              host: str) -> int:
    """Replace the slot's interrupted or cancelled runs by a new run, hand it to `worker`, return its id."""
    key = slot_key(slot.variant, slot.seed)
    for run_id in plan.replace.get(key, []):
        try:
            store.delete_run(run_id)
        except RunNotFound:
            pass
    run_id = store.create_run(name=run_name(spec, slot.variant, slot.seed), config=slot.cfg.to_dict(),
                              study_id=study_id)
    store.attach_process(run_id, pid=worker.proc.pid, host=host)  # judged by this pid from now on
    worker.start(run_id, slot)
    return run_id


def _settle(store: Store, run_id: int, worker: _Worker, *, status: str = "interrupted",
            error: str | None = None) -> None:
    """A worker is done with `run_id` (it answered or died): make sure the run is stored in a final status."""
    answer = worker.receive()
    run = _get(store, run_id)
    if run is None or run.status != "running":
        return
    if answer is not None and error is None:  # the worker answered, but the run's end was not stored
        status, error = "failed", f"the worker could not store the run's end: {answer[1] or 'no error given'}"
    elif error is None:
        error = f"{INTERRUPTED_ERROR} (worker exit code {worker.proc.exitcode})"
    try:
        store.finish_run(run_id, status=status, summary=run.summary, error=error, wall_time_s=run.duration_s)
    except RunNotFound:
        pass


def _get(store: Store, run_id: int) -> Run | None:
    try:
        return store.get_run(run_id)
    except RunNotFound:
        return None


def _cancelled(store: Store, study_id: int, launched: set[int]) -> bool:
    return bool(launched) and any(r.cancel_requested for r in store.list_runs(study_id=study_id) if r.id in launched)


def _request_cancel(store: Store, run_id: int) -> None:
    try:
        store.request_cancel(run_id)
    except RunNotFound:
        pass


def _check_shareable(url: str) -> None:
    from sqlalchemy import make_url  # noqa: PLC0415

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and (database in ("", ":memory:") or "mode=memory" in url):
        raise ConfigError("db", "a study's worker processes cannot share an in-memory SQLite database; "
                                "use a database file")


class _Worker:
    """One spawned worker process and the pipe to it; `task` is the (run id, slot) it is training."""

    def __init__(self, url: str, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, url, threads), daemon=True,
                                name="lossboard-study-worker")
        self.proc.start()
        child.close()
        self.task: tuple[int, Slot] | None = None

    def alive(self) -> bool:
        return self.proc.is_alive()

    def start(self, run_id: int, slot: Slot) -> None:
        self.task = (run_id, slot)
        try:
            self.conn.send((run_id, slot.cfg.to_dict()))
        except (BrokenPipeError, OSError):
            pass  # it died: the next wait sees its sentinel and settles the run as interrupted

    def receive(self) -> tuple[str, str | None] | None:
        """The worker's answer for its task, ("ok", None) or ("error", why the run's end was not stored), or
        None if it died first."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        self.proc.join(timeout=0 if self.proc.is_alive() else 5)
        return None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def worker_main(conn: Connection, url: str, threads: int) -> None:
    """A worker process: trains the runs it is sent, one at a time, until it is sent None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scheduler handles Ctrl-C, through the store
    import torch  # noqa: PLC0415 - only workers need torch

    from core.data import load_dataset  # noqa: PLC0415
    from core.store import StoreReporter  # noqa: PLC0415
    from core.training import train  # noqa: PLC0415

    torch.set_num_threads(threads)
    # The first optimizer a process builds imports torch._dynamo (~2 s): do it now, so that it does not count
    # in the wall time of the worker's first run.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    store = Store(url)
    host = socket.gethostname()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        run_id, config = task
        reporter = StoreReporter(store, run_id, pid=os.getpid(), host=host)
        answer: tuple[str, str | None] = ("ok", None)
        try:
            cfg = ExperimentConfig.from_dict(config)
            try:
                data = load_dataset(cfg)
            except Exception as exc:  # noqa: BLE001 - a data set that cannot load is this run's failure
                store.finish_run(run_id, status="failed", summary={}, error=f"{type(exc).__name__}: {exc}")
            else:
                train(cfg, reporter, data=data)
        except Exception as exc:  # noqa: BLE001 - the store could not be written; the scheduler records it
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):  # the scheduler is gone; the run is stored all the same
            return


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _spec_difference(a: StudySpec, b: StudySpec) -> str:
    if a.seeds != b.seeds:
        return f"seeds {a.seeds} vs {b.seeds}"
    if dict(a.vary) != dict(b.vary):
        return f"varies {variant_label({k: list(v) for k, v in a.vary.items()})} vs " \
               f"{variant_label({k: list(v) for k, v in b.vary.items()})}"
    changed = [k for k in field_names() if a.base.get(k) != b.base.get(k)]
    return "base " + ", ".join(f"{k} {format_value(a.base.get(k))} vs {format_value(b.base.get(k))}"
                               for k in changed[:3])


# ---------------------------------------------------------------------- command line
def add_study_parser(subparsers: Any) -> Any:
    """`python -m core study ...`: the parser of the study command, added to the CLI's subparsers."""
    from core.cli import PRESETS, add_config_flags  # noqa: PLC0415 - cli imports this module

    s = subparsers.add_parser(
        "study", help="train a grid of variants over seeds in parallel (running a stored study again resumes it)",
        description="Train every combination of the --vary values, each with seeds 0..N-1, in parallel worker "
                    "processes; each run is stored as it trains. Running a study of a stored name again keeps its "
                    "finished, diverged and failed runs and reruns the interrupted and cancelled ones.")
    s.add_argument("--study", default=None, metavar="NAME",
                   help=f"a stored study to resume, or a built-in one to start: {', '.join(STUDIES)}; with --name, "
                        "the grid to start a new study from")
    s.add_argument("--name", default=None,
                   help="the new study's name (default: the --study name, or one derived from the grid, so the "
                        "same command resumes the same study)")
    s.add_argument("--preset", default=None, help=f"base config from a preset: {', '.join(PRESETS)}")
    s.add_argument("--config", default=None, help="base config from a JSON file (the `config` of `show --json`)")
    s.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2",
                   help="a config field and its values (as `show --json` names them); repeat for more fields. "
                        "Widths: --vary hidden=[64],[64,64]")
    s.add_argument("--seeds", default=None, metavar="N", help=f"seeds per variant, 0..N-1 (default {DEFAULT_SEEDS})")
    s.add_argument("--workers", default=None, metavar="K", help="worker processes (default: one per CPU core)")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object: id, name, runs, status counts, ranking, effects")
    add_config_flags(s)
    return s


def cmd_study(args: Any, store: Store, out: TextIO, err: TextIO) -> int:
    """Build or find the study, run what it still needs, print its ranking and effects. Bad input raises a
    ConfigError naming the field, before any run (or study) is created. Exit code 0 when every run of the grid
    has a result, 1 when some are left (cancelled or interrupted: run the same command again to resume)."""
    from core.cli import dump_json  # noqa: PLC0415

    workers = _positive_int("workers", args.workers, 256) if args.workers is not None else None
    _check_shareable(store.url)
    spec, study_id = spec_from_args(args, store)
    if study_id is None:
        check_runnable(spec)
        study_id = open_study(store, spec)
    plan = plan_study(store, study_id)
    n = min(workers or default_workers(), len(plan.todo))
    err.write(f"study {study_id} {spec.name!r}: {spec.size} runs; {len(plan.kept)} done, "
              f"{len(plan.busy)} running elsewhere, {len(plan.todo)} to run" + (f" on {n} workers" if n else "") + "\n")
    err.flush()

    def line(event: Finished) -> None:
        run = event.run
        loss = run.summary.get("final_val_loss")
        err.write(f"[{event.done}/{event.total}] run {run.id} {variant_label(event.slot.variant)} "
                  f"seed={event.slot.seed}: {run.status}"
                  + (f", final val_loss {loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else "")
                  + (f" - {run.error.splitlines()[0]}" if run.error and run.status != "finished" else "")
                  + (f" ({run.duration_s:.1f} s)" if run.duration_s is not None else "") + "\n")
        err.flush()

    previous = _on_sigterm_raise()
    try:
        outcome = resume_study(store, study_id, workers=workers, on_finished=line)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    summary = summarize(store, study_id)
    if args.json:
        dump_json(summary, out)
    else:
        out.write(format_summary(summary))
    if outcome.remaining:
        err.write(f"{outcome.remaining} runs have no result yet; run the same command again to resume "
                  f"(python -m core study --study {shlex.quote(spec.name)})\n")
    return 1 if outcome.remaining else 0


def spec_from_args(args: Any, store: Store) -> tuple[StudySpec, int | None]:
    """The spec the command line asks for, and the stored study's id when it names one (else None)."""
    from core.cli import config_from_args  # noqa: PLC0415

    grid = _grid_options(args)
    if args.study is not None:
        stored = store.get_study_by_name(args.study)
        renamed = args.name is not None and args.name.strip() != args.study.strip()
        if stored is not None and not renamed:
            if grid:
                raise ConfigError("study", f"a study named {stored.name!r} is stored; run it without grid options "
                                           f"({', '.join(grid)}) to resume it, or add --name to start a new study "
                                           "from its grid")
            return StudySpec.from_dict(stored.spec), stored.id
        template = StudySpec.from_dict(stored.spec) if stored is not None else named_study(args.study)
        for option in ("preset", "config"):
            if getattr(args, option):
                raise ConfigError(option, f"the study {template.name!r} has its own base config; change its fields "
                                          "with flags, or leave out --study to vary a preset")
        base = dict(template.base)
        for name in field_names():
            value = getattr(args, f"cfg_{name}", None)
            if value is not None:
                base[name] = coerce(name, value)
        vary = dict(template.vary) | parse_vary(args.vary)
        seeds = _seeds(args.seeds if args.seeds is not None else template.seeds)
        spec = StudySpec(name=args.name or template.name, base=base, vary=vary, seeds=seeds)
    else:
        base = config_from_args(args).to_dict()
        vary = parse_vary(args.vary)
        seeds = _seeds(args.seeds if args.seeds is not None else DEFAULT_SEEDS)
        spec = StudySpec(name=args.name or auto_name(base, vary, seeds), base=base, vary=vary, seeds=seeds)
    found = store.get_study_by_name(spec.name)
    return spec, (open_study(store, spec) if found is not None else None)


def parse_vary(items: Sequence[str]) -> dict[str, list[str]]:
    """["batchnorm=false,true", "hidden=[64],[64,64]"] -> {"batchnorm": ["false", "true"], "hidden": [...]}.
    Values are split at commas outside brackets; the spec coerces them. Field names may use - for _."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError("vary", f"{item!r} must look like FIELD=V1,V2 (e.g. loss=bce,bce_with_logits)")
        if name not in field_names():
            coerce(name, None)  # raises: unknown config field, naming it
        if name in out:
            raise ConfigError(name, "is given to --vary twice; list all its values in one --vary")
        values = _split_values(text)
        if not values:
            raise ConfigError(name, "needs at least one value to vary over, e.g. --vary lr=0.01,0.1")
        out[name] = values
    return out


def check_runnable(spec: StudySpec) -> None:
    """What validation cannot see but would fail every run: a CSV that does not load, a device that is absent."""
    seen_csv, seen_device = set(), set()
    for variant in spec.variants():
        cfg = ExperimentConfig.from_dict({**spec.base, **variant})
        if cfg.dataset == "csv" and (cfg.csv_path, cfg.csv_label) not in seen_csv:
            from core.data import read_csv  # noqa: PLC0415

            seen_csv.add((cfg.csv_path, cfg.csv_label))
            read_csv(cfg.csv_path, cfg.csv_label)
        if cfg.device not in ("auto", "cpu") and cfg.device not in seen_device:
            from core.training import resolve_device  # noqa: PLC0415 - imports torch, only when needed

            seen_device.add(cfg.device)
            try:
                resolve_device(cfg.device)
            except RuntimeError as exc:
                raise ConfigError("device", str(exc)) from None


def auto_name(base: Mapping[str, Any], vary: Mapping[str, Any], seeds: int) -> str:
    """A name derived from the grid: the same grid always gets the same name, so the same command resumes."""
    canonical = json.dumps({"base": ExperimentConfig.from_dict(base).to_dict(),
                            "vary": {k: [_jsonable(coerce(k, v)) for v in vs] for k, vs in vary.items()},
                            "seeds": seeds}, sort_keys=True, default=str)
    digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
    fields = " x ".join(vary) or "seeds"
    return f"{fields} on {base.get('dataset')}, {seeds} seeds ({digest})"


def format_summary(summary: Mapping[str, Any]) -> str:
    """The ranking and the effects in words, as the command line prints them."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items()) or "no runs"
    lines = [f"study {summary['id']} {summary['name']!r}: {summary['runs']} of {summary['expected_runs']} runs "
             f"({counts})", "", f"{'rank':>4}  {'n':>2}  {'final val loss':>17}  {'best val loss':>17}  "
                                f"{'final val AUC':>15}  variant"]
    for row in summary["ranking"]:
        def cell(metric: str, width: int) -> str:
            mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
            if not math.isfinite(mean):
                return f"{'-':>{width}}"
            return f"{f'{mean:.4f}' + (f' ± {sd:.4f}' if math.isfinite(sd) else ''):>{width}}"

        extra = "".join(f", {row[k]} {k}" for k in ("diverged", "failed") if row[k])
        lines.append(f"{row['rank']:>4}  {row['n']:>2}  {cell('final_val_loss', 17)}  {cell('best_val_loss', 17)}  "
                     f"{cell('final_val_auc', 15)}  {row['variant']}{extra}")
    if summary["sentences"]:
        lines += ["", "effects (mean over seeds, 95% CI):"] + [f"  - {s}" for s in summary["sentences"]]
    return "\n".join(lines) + "\n"


def _grid_options(args: Any) -> list[str]:
    given = [f"--{o}" for o in ("preset", "config") if getattr(args, o, None)]
    given += ["--vary"] if args.vary else []
    given += ["--seeds"] if args.seeds is not None else []
    given += [f"--{n.replace('_', '-')}" for n in field_names() if getattr(args, f"cfg_{n}", None) is not None]
    return given


def _split_values(text: str) -> list[str]:
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return [v for v in values if v != ""] if text.strip() else []


def _seeds(value: Any) -> int:
    return _positive_int("seeds", value, MAX_SEEDS)


def _positive_int(name: str, value: Any, most: int) -> int:
    try:
        number = coerce("seed", value)
    except ConfigError:
        number = None
    if number is None or not 1 <= number <= most:
        raise ConfigError(name, f"must be a whole number from 1 to {most}, got {value!r}")
    return number


def _on_sigterm_raise() -> Any:
    """SIGTERM cancels the study like Ctrl-C (main thread only); returns the handler to restore."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None
