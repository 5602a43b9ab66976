"""The commands on stored runs: `runs`, `show`, `metrics`, `delete`, `tag`, `note`."""

from __future__ import annotations

from typing import Any, TextIO

from core.analysis.effects import change_text
from core.analysis.findings import findings
from core.cli.output import dump_json
from core.experiment.config import ConfigError


def run_record(run) -> dict[str, Any]:
    return {"id": run.id, "name": run.name, "status": run.status, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at, "duration_s": run.duration_s,
            "device": run.device, "host": run.host, "dtype": run.dtype, "torch_version": run.torch_version,
            "error": run.error,
            "tags": list(run.tags), "notes": run.notes, "study_id": run.study_id, "config": run.config,
            "summary": run.summary}


def cmd_runs(args, store, out: TextIO, err: TextIO) -> int:
    runs = store.list_runs(status=args.status)
    if args.json:
        dump_json([run_record(r) for r in runs], out)
        return 0
    if not runs:
        every = len(store.list_runs()) if args.status else 0
        if every:
            out.write(f"no {args.status} runs ({every} runs in all: `python -m core runs`)\n")
        else:
            out.write("no runs yet: try `python -m core train --preset article-example`\n")
        return 0
    out.write(f"{'id':>5}  {'status':<11} {'created (UTC)':<16}  {'device':<7} {'val_loss':>9}  name\n")
    for r in runs:
        loss = r.summary.get("final_val_loss")
        loss_text = f"{loss:9.4f}" if isinstance(loss, (int, float)) else f"{'-':>9}"
        device = r.device or "-"
        out.write(f"{r.id:>5}  {r.status:<11} {r.created_at:%Y-%m-%d %H:%M}  {device:<7} {loss_text}  {r.name}\n")
    return 0


def cmd_show(args, store, out: TextIO, err: TextIO) -> int:
    run = store.get_run(args.id)
    found = findings(run)
    record = run_record(run) | {"metric_keys": store.metric_keys(run.id), "findings": [f.to_dict() for f in found]}
    if args.json:
        dump_json(record, out)
        return 0
    for key in ("id", "name", "status", "created_at", "duration_s", "device", "dtype", "torch_version", "tags",
                "notes", "error"):
        out.write(f"{key:>14}: {record[key]}\n")
    out.write("        config:\n" + "".join(f"{'':>16}{k} = {v!r}\n" for k, v in run.config.items()))
    out.write("       summary:\n" + "".join(f"{'':>16}{k} = {v!r}\n" for k, v in run.summary.items()))
    out.write(f"   metric keys: {', '.join(record['metric_keys'])}\n")
    out.write("      findings:" + ("" if found else " none") + "\n")
    for f in found:
        out.write(f"{'':>16}[{f.severity}] {f.title}\n")
        if f.cause:
            out.write(f"{'':>18}cause: {f.cause}" + (f"; fix: {change_text(f.fix)}" if f.fix else "") + "\n")
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
        frame.to_csv(out, index=False, na_rep="NaN", lineterminator="\n")  # as export writes it
    else:
        dump_json(frame.to_dict(orient="records"), out)
    return 0


def cmd_delete(args, store, out: TextIO, err: TextIO) -> int:
    training = store.get_run(args.id).status == "running"
    store.delete_run(args.id)
    out.write(f"deleted run {args.id}" + (" (it was training: its process stops at its next flush, about a "
                                          "second)" if training else "") + "\n")
    return 0


def cmd_tag(args, store, out: TextIO, err: TextIO) -> int:
    (store.remove_tag if args.remove else store.add_tag)(args.id, args.tag)
    out.write(f"run {args.id} tags: {', '.join(store.get_run(args.id).tags) or '(none)'}\n")
    return 0


def cmd_note(args, store, out: TextIO, err: TextIO) -> int:
    store.set_notes(args.id, args.text)
    out.write(f"run {args.id} note saved\n")
    return 0
