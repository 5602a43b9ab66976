"""`python -m core study`: build or resume a study from the command line, train what it still needs, print its
ranking and effects.

`--study NAME` resumes a stored study or starts a built-in one (`STUDIES`); without it, the base config comes from
`--preset`/`--config`/flags exactly as for `train` and the grid from `--vary`, and the study is named after its
grid, so the same command resumes it.
"""

from __future__ import annotations

import importlib
import math
import shlex
import signal
import threading
from typing import Any, Mapping, TextIO

from sqlalchemy.exc import OperationalError

from core.analysis.effects import variant_label
from core.analysis.judges import DEFAULT_JUDGE, JUDGES
from core.cli.output import dump_json
from core.experiment.config import PRESETS, ConfigError, coerce, field_names
from core.experiment.flags import add_config_flags, config_from_args
from core.jobs.executors import ENV_EXECUTOR, ENV_SCHEDULER, EXECUTORS, check_scheduler, executor_options
from core.jobs.populations import resume_study_populations
from core.jobs.scheduler import Finished, check_shareable
from core.jobs.spec import DEFAULT_SEEDS, MAX_SEEDS, MAX_WORKERS, STUDIES, StudySpec, auto_name, named_study, parse_vary
from core.jobs.studies import (RESULT_STATUSES, check_runnable, default_workers, find_study, open_study, plan_study,
                                summarize)
from core.presentation.forms import split_text
from core.store import Store
from core.store.records import db_reason


def add_study_parser(subparsers: Any) -> Any:
    """`python -m core study ...`: the parser of the study command, added to the CLI's subparsers."""
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
    s.add_argument("--no-population", action="store_true",
                   help="train every run on its own, one per worker; by default the runs that differ only in seed, "
                        "lr, weight decay, activation, loss, BatchNorm (its eps, momentum), clamp eps, pos_weight, "
                        "optimizer, SGD momentum, grad clip, ELU alpha, hidden bias init, output ReLU or epochs train "
                        "side by side as one batched model per worker (the same runs, values equal up to float "
                        "rounding)")
    s.add_argument("--workers", default=None, metavar="K", help="worker processes (default: one per CPU core)")
    s.add_argument("--executor", default=None, choices=EXECUTORS,
                   help=f"where the runs train: local worker processes (default), or a Dask cluster (needs "
                        f"--scheduler); default ${ENV_EXECUTOR}, else local")
    s.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help=f"the Dask scheduler's address for --executor dask; default ${ENV_SCHEDULER}")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object: id, name, runs, status counts, judge, ranking, effects, "
                        "interactions, sentences")
    s.add_argument("--judge", default=DEFAULT_JUDGE, metavar="NAME",
                   help=f"what the variants are judged on: {', '.join(JUDGES)} (default {DEFAULT_JUDGE}: the exact "
                        "val loss, the same yardstick for clamped BCE and logits runs)")
    s.add_argument("--difference", default=None, metavar="D",
                   help="a difference in the judged metric worth finding: prints the seeds each effect would need "
                        "to find it 80%% of the time (paired t, alpha 0.05)")
    add_config_flags(s)
    return s


def cmd_study(args: Any, store: Store, out: TextIO, err: TextIO) -> int:
    """Build or find the study, run what it still needs, print its ranking and effects. Bad input raises a
    ConfigError naming the field, before any run (or study) is created. Exit code 0 when every run of the grid
    has a result, 1 when some are left (cancelled or interrupted: run the same command again to resume)."""
    workers = _positive_int("workers", args.workers, MAX_WORKERS) if args.workers is not None else None
    judge_name, difference = statistics_options(args)
    executor, scheduler = executor_options(getattr(args, "executor", None), getattr(args, "scheduler", None))
    if executor == "dask" and scheduler is not None:
        check_scheduler(scheduler)  # nothing stored for a cluster that is not there
    check_shareable(store.url)
    spec, study_id = spec_from_args(args, store)
    if study_id is None:
        check_runnable(spec)
        study_id = open_study(store, spec)
    plan = plan_study(store, study_id)
    n = min(workers or default_workers(), len(plan.todo))
    where = f" on {n} worker{'s' if n != 1 else ''}" if n else ""
    if executor == "dask" and plan.todo:
        where = f" on the Dask cluster at {scheduler}"
    err.write(f"study {study_id} {spec.name!r}: {spec.size} runs; {len(plan.kept)} done, "
              f"{len(plan.busy)} running elsewhere, {len(plan.todo)} to run{where}\n")
    batched = executor != "dask" and not getattr(args, "no_population", False)
    split = split_text([slot.cfg for slot in plan.todo], n) if batched else None
    if split:  # as the Studies page says it: a Dask task claims its own cells
        err.write(f"{split}\n")
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

    if plan.todo:
        # The statistics' scipy.stats and scipy.optimize take about a second to import: load them while the runs
        # train, not after.
        threading.Thread(target=lambda: [importlib.import_module(m) for m in ("scipy.stats", "scipy.optimize")],
                         daemon=True, name="lossboard-import-scipy").start()
    previous = _on_sigterm_raise()
    try:
        outcome = resume_study_populations(store, study_id, workers=workers, on_finished=line, executor=executor,
                                           scheduler=scheduler, population=not getattr(args, "no_population", False))
    except OperationalError as exc:  # the store went away mid-study (a server stopped): not bad input
        err.write(f"error: db: {store.where!r} stopped answering during the study: {db_reason(exc)}. What was "
                  "stored is kept and the runs in flight end interrupted; when the store is back, run the same "
                  f"command again to resume (python -m core study --study {shlex.quote(spec.name)})\n")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    summary = summarize(store, study_id, judge_name, difference=difference)
    if args.json:
        dump_json(summary, out)
    else:
        out.write(format_summary(summary))
    if summary.get("warning"):
        err.write(f"note: {summary['warning']}\n")
    if outcome.elsewhere:
        err.write(f"{outcome.elsewhere} runs are training in another process (another scheduler or worker of this "
                  "study), which stores their results; each is trained once\n")
    if outcome.remaining > outcome.elsewhere:
        err.write(f"{outcome.remaining - outcome.elsewhere} runs have no result yet; run the same command again to "
                  f"resume (python -m core study --study {shlex.quote(spec.name)})\n")
    return 1 if outcome.remaining else 0


def statistics_options(args: Any) -> tuple[str, float | None]:
    """--judge and --difference, checked before anything runs: a ConfigError names the option and what it takes."""
    name = getattr(args, "judge", None) or DEFAULT_JUDGE
    if name not in JUDGES:
        raise ConfigError("judge", f"must be one of {', '.join(JUDGES)}; got {name!r}")
    raw = getattr(args, "difference", None)
    if raw is None:
        return name, None
    try:
        difference = float(raw)
    except (TypeError, ValueError):
        difference = math.nan
    if not math.isfinite(difference) or difference == 0:
        raise ConfigError("difference", f"must be a finite non-zero number in the judged metric's units; got {raw!r}")
    return name, difference


def spec_from_args(args: Any, store: Store) -> tuple[StudySpec, int | None]:
    """The spec the command line asks for, and the stored study's id when it names one (else None)."""
    grid = _grid_options(args)
    if args.study is not None:
        stored = stored_study(store, args.study)
        renamed = args.name is not None and args.name.strip() != (stored.name if stored else args.study).strip()
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


def stored_study(store: Store, name: str) -> Any:
    """The stored study `name` names (its name, else its id), None for a built-in study not stored yet; a
    ConfigError listing both kinds for anything else."""
    stored = find_study(store, name)
    if stored is None and name not in STUDIES:
        names = ", ".join(s.name for s in store.list_studies()) or "none yet"
        raise ConfigError("study", f"{name!r} is neither a stored study's name or id (stored: {names}) nor a "
                                   f"built-in study ({', '.join(STUDIES)})")
    return stored


def format_summary(summary: Mapping[str, Any]) -> str:
    """The ranking and the effects in words, as the command line prints them."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items()) or "no runs"
    judged = summary.get("metric", "final_val_loss")
    label = JUDGES[summary["judge"]].label if summary.get("judge") in JUDGES else judged
    columns = list(dict.fromkeys([judged, "final_val_loss", "final_val_auc"]))
    widths = {m: max(17, len(m)) for m in columns}
    names = {judged: label, "final_val_loss": "final val loss", "final_val_auc": "final val AUC"}
    results = sum(v for k, v in summary["status_counts"].items() if k in RESULT_STATUSES)
    lines = [f"study {summary['id']} {summary['name']!r}: {results} of {summary['expected_runs']} runs have a "
             f"result ({counts}), ranked by {label} (each cell: mean ± sd over seeds)", "",
             f"{'rank':>4}  {'n':>2}  " + "  ".join(f"{names[m]:>{widths[m]}}" for m in columns) + "  variant"]
    for row in summary["ranking"]:
        def cell(metric: str, width: int) -> str:
            mean, sd = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_sd", math.nan)
            if not math.isfinite(mean):
                return f"{'-':>{width}}"
            return f"{f'{mean:.4g}' + (f' ± {sd:.3g}' if math.isfinite(sd) else ''):>{width}}"

        extra = "".join(f", {row[k]} {k}" for k in ("diverged", "failed") if row[k])
        lines.append(f"{row['rank']:>4}  {row['n']:>2}  " + "  ".join(cell(m, widths[m]) for m in columns)
                     + f"  {row['variant']}{extra}")
    if summary["sentences"]:
        lines += ["", f"effects and interactions on {label} (mean over seeds, 95% CI):"]
        lines += [f"  - {s}" for s in summary["sentences"]]
        if summary.get("holm_family"):
            lines.append(f"  (p-values in --json are Holm-corrected across the {summary['holm_family']} effects and "
                         "interactions with a p-value: p_holm)")
    if summary.get("seeds"):
        lines += ["", "seeds (paired t over seeds, 80% power, alpha 0.05, the sd this study measured):"]
        lines += [f"  - {s}" for s in summary["seeds"]]
    return "\n".join(lines) + "\n"


def _grid_options(args: Any) -> list[str]:
    given = [f"--{o}" for o in ("preset", "config") if getattr(args, o, None)]
    given += ["--vary"] if args.vary else []
    given += ["--seeds"] if args.seeds is not None else []
    given += [f"--{n.replace('_', '-')}" for n in field_names() if getattr(args, f"cfg_{n}", None) is not None]
    return given


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
