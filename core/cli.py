"""`python -m core`: train, list, show, export and edit runs from the command line.

Bad input (an unknown preset or field, a value out of range, a broken CSV) exits with code 2 and one line on
stderr naming the field and what is allowed, and creates no run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from core.config import (GROUPS, PRESETS, ConfigError, ExperimentConfig, choices, coerce, field_comment, field_kind,
                         field_names, preset)
from core.export import add_export_parser, cmd_export
from core.studies import add_study_parser, cmd_study

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the whole usage; one line is clearer
        raise UsageError(message)


def json_safe(value: Any) -> Any:
    """NaN and Inf are data: JSON has no literal for them, so they become the strings "NaN", "Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dump_json(obj: Any, out: TextIO) -> None:
    json.dump(json_safe(obj), out, indent=2, default=str, allow_nan=False)
    out.write("\n")


# ---------------------------------------------------------------------- parser
def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, `--n-samples` and `--n_samples` alike; values are parsed by the config."""
    for group, names in GROUPS.items():
        g = parser.add_argument_group(f"{group} (config fields)")
        for name in names:
            kind = field_kind(name)
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            help_text = field_comment(name)
            if choices(name):
                help_text += f" [{'|'.join(choices(name))}]"
            extra: dict[str, Any] = {"nargs": "?", "const": "true"} if kind == "bool" else {}
            g.add_argument(*flags, dest=f"cfg_{name}", default=None, metavar="V", help=help_text, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Lossboard: train binary classifiers and compare their loss.")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL of the run store (default: $LOSSBOARD_DB or "
                                                   "sqlite:///experiments.db at the project root)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one run and store it")
    t.add_argument("--preset", default=None, help=f"start from a named config: {', '.join(PRESETS)}")
    t.add_argument("--config", default=None, help="JSON file of a config (the `config` that `show --json` prints)")
    t.add_argument("--name", default=None, help="run name (default: the preset or a description of the config)")
    t.add_argument("--json", action="store_true", help="print one JSON object with id, status and summary")
    t.add_argument("--dry-run", action="store_true", help="stop after one optimizer step")
    t.add_argument("--run-id", type=int, default=None, help=argparse.SUPPRESS)  # the dashboard pre-creates the run
    add_config_flags(t)

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--json", action="store_true")
    r.add_argument("--status", default=None, help="only runs with this status")

    s = sub.add_parser("show", help="one run: config, status, summary, metric keys")
    s.add_argument("id", type=int)
    s.add_argument("--json", action="store_true")

    m = sub.add_parser("metrics", help="the stored series of a run")
    m.add_argument("id", type=int)
    m.add_argument("--key", action="append", default=None, help="metric key (repeat for several; default all)")
    m.add_argument("--format", choices=("csv", "json"), default="csv")

    d = sub.add_parser("delete", help="delete a run and its metrics")
    d.add_argument("id", type=int)

    g = sub.add_parser("tag", help="add a tag to a run (--remove to take it off)")
    g.add_argument("id", type=int)
    g.add_argument("tag")
    g.add_argument("--remove", action="store_true")

    n = sub.add_parser("note", help="set a run's note")
    n.add_argument("id", type=int)
    n.add_argument("text")

    add_export_parser(sub)
    add_study_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Preset, then --config file, then flags: each layer overrides the one before; validated at the end."""
    data = (preset(args.preset) if args.preset else ExperimentConfig()).to_dict()
    if args.config:
        path = Path(args.config)
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("config", f"no such file: {str(path)!r}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("config", f"{path.name} is not valid JSON ({exc})") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("config"), dict):
            loaded = loaded["config"]  # a whole `show --json` object works too
        if not isinstance(loaded, dict):
            raise ConfigError("config", f"{path.name} must hold a JSON object of config fields")
        data.update(loaded)
    for name in field_names():
        value = getattr(args, f"cfg_{name}")
        if value is not None:
            data[name] = coerce(name, value)
    return ExperimentConfig.from_dict(data)


def describe(cfg: ExperimentConfig) -> str:
    """A short default run name: what differs from plain defaults that matters most for the loss."""
    hidden = "x".join(map(str, cfg.hidden)) or "linear"
    parts = [cfg.dataset, hidden, "bn" if cfg.batchnorm else None, cfg.activation if cfg.hidden else None,
             "out-relu" if cfg.output_relu else None,
             cfg.loss + (f"(eps={cfg.clamp_eps:g})" if cfg.clamp_eps else ""), f"{cfg.optimizer}-{cfg.lr:g}",
             f"s{cfg.seed}"]
    return " ".join(p for p in parts if p)


# ---------------------------------------------------------------------- commands
class _Progress:
    """Wraps a reporter and draws a progress bar on stderr."""

    def __init__(self, inner, out: TextIO) -> None:
        self.inner, self.out, self.total = inner, out, 0
        self.tty = out.isatty()
        self.last_pct = -1

    def on_start(self, info) -> None:
        self.total = info.total_steps
        self.out.write(f"training on {info.device} ({info.dtype}), {info.total_steps} steps\n")
        self.inner.on_start(info)

    def on_metrics(self, rows, *, step: int) -> None:
        self.inner.on_metrics(rows, step=step)
        pct = int(100 * step / max(self.total, 1))
        if pct != self.last_pct and (self.tty or pct // 10 != self.last_pct // 10):
            bar = "#" * (pct // 4)
            self.out.write(f"\r[{bar:<25}] {pct:3d}% step {step}/{self.total}" + ("" if self.tty else "\n"))
            self.out.flush()
            self.last_pct = pct

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def on_finish(self, result) -> None:
        if self.tty:
            self.out.write("\n")
        self.inner.on_finish(result)


def cmd_train(args: argparse.Namespace, store, out: TextIO, err: TextIO) -> int:
    from core.data import load_dataset  # noqa: PLC0415 - keep `runs`/`show` free of torch start-up
    from core.store import StoreReporter
    from core.training import resolve_device, train

    if args.run_id is not None:
        store.get_run(args.run_id)
    try:
        cfg = config_from_args(args)
        data = load_dataset(cfg)  # a broken CSV is bad input: report it before a run exists
        try:
            device = resolve_device(cfg.device)
        except RuntimeError as exc:
            raise ConfigError("device", str(exc)) from None
    except ConfigError as exc:
        if args.run_id is not None:  # the dashboard made the run already: say why it never started
            store.finish_run(args.run_id, status="failed", summary={}, error=str(exc))
        raise
    if args.run_id is not None:
        run_id = args.run_id
    else:
        run_id = store.create_run(name=args.name or args.preset or describe(cfg), config=cfg.to_dict())
    reporter = _Progress(StoreReporter(store, run_id, pid=os.getpid(), host=socket.gethostname()), err)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = train(cfg, reporter, data=data, device=device, max_steps=1 if args.dry_run else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    run = store.get_run(run_id)
    if args.json:
        dump_json({"id": run.id, "name": run.name, "status": result.status, "summary": result.summary,
                   "error": result.error, "device": run.device, "wall_time_s": result.wall_time_s}, out)
    else:
        loss = result.summary.get("final_val_loss")
        out.write(f"run {run.id} {run.name!r}: {result.status}"
                  + (f", final val_loss {loss:.4f}" if isinstance(loss, float) else "")
                  + (f" - {result.error.splitlines()[0]}" if result.error else "") + "\n")
    return 1 if result.status == "failed" else 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_record(run) -> dict[str, Any]:
    return {"id": run.id, "name": run.name, "status": run.status, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at, "duration_s": run.duration_s,
            "device": run.device, "dtype": run.dtype, "torch_version": run.torch_version, "error": run.error,
            "tags": list(run.tags), "notes": run.notes, "study_id": run.study_id, "config": run.config,
            "summary": run.summary}


def cmd_runs(args, store, out: TextIO, err: TextIO) -> int:
    runs = store.list_runs(status=args.status)
    if args.json:
        dump_json([run_record(r) for r in runs], out)
        return 0
    if not runs:
        out.write("no runs yet: try `python -m core train --preset article-example`\n")
        return 0
    out.write(f"{'id':>5}  {'status':<11} {'created (UTC)':<16}  {'device':<7} {'val_loss':>9}  name\n")
    for r in runs:
        loss = r.summary.get("final_val_loss")
        loss_text = f"{loss:9.4f}" if isinstance(loss, (int, float)) else f"{'-':>9}"
        out.write(f"{r.id:>5}  {r.status:<11} {r.created_at:%Y-%m-%d %H:%M}  {(r.device or '-'):<7} {loss_text}  {r.name}\n")
    return 0


def cmd_show(args, store, out: TextIO, err: TextIO) -> int:
    run = store.get_run(args.id)
    record = run_record(run) | {"metric_keys": store.metric_keys(run.id)}
    if args.json:
        dump_json(record, out)
        return 0
    for key in ("id", "name", "status", "created_at", "duration_s", "device", "dtype", "torch_version", "tags",
                "notes", "error"):
        out.write(f"{key:>14}: {record[key]}\n")
    out.write("        config:\n" + "".join(f"{'':>16}{k} = {v!r}\n" for k, v in run.config.items()))
    out.write("       summary:\n" + "".join(f"{'':>16}{k} = {v!r}\n" for k, v in run.summary.items()))
    out.write(f"   metric keys: {', '.join(record['metric_keys'])}\n")
    return 0


def cmd_metrics(args, store, out: TextIO, err: TextIO) -> int:
    store.get_run(args.id)
    frame = store.metrics_frame([args.id], keys=args.key)
    if args.key:
        missing = sorted(set(args.key) - set(store.metric_keys(args.id)))
        if missing:
            raise ConfigError("key", f"run {args.id} has no metric {missing[0]!r}; it has: "
                                     f"{', '.join(store.metric_keys(args.id))}")
    frame = frame.drop(columns=["run_id"])
    if args.format == "csv":
        frame.to_csv(out, index=False, lineterminator="\n")
    else:
        dump_json(frame.to_dict(orient="records"), out)
    return 0


def cmd_delete(args, store, out: TextIO, err: TextIO) -> int:
    store.delete_run(args.id)
    out.write(f"deleted run {args.id}\n")
    return 0


def cmd_tag(args, store, out: TextIO, err: TextIO) -> int:
    (store.remove_tag if args.remove else store.add_tag)(args.id, args.tag)
    out.write(f"run {args.id} tags: {', '.join(store.get_run(args.id).tags) or '(none)'}\n")
    return 0


def cmd_note(args, store, out: TextIO, err: TextIO) -> int:
    store.set_notes(args.id, args.text)
    out.write(f"run {args.id} note saved\n")
    return 0


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "show": cmd_show, "metrics": cmd_metrics, "delete": cmd_delete,
            "tag": cmd_tag, "note": cmd_note, "export": cmd_export, "study": cmd_study}


def main(argv: Sequence[str] | None = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         env: dict[str, str] | None = None) -> int:
    from core.store import RunNotFound, Store, pid_alive  # noqa: PLC0415

    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    try:
        store = Store(args.db, env=os.environ if env is None else env)
        store.mark_interrupted(host=socket.gethostname(), pid_alive=pid_alive)
        handler = COMMANDS[args.command]
        return handler(args, store, out, err)
    except ConfigError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    except RunNotFound as exc:
        err.write(f"error: {exc.args[0] if exc.args else exc}\n")
        return EXIT_BAD_INPUT
    except ValueError as exc:  # the store's checks (a blank name or tag)
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return 0
