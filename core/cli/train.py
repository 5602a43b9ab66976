"""`python -m core train`: one run, trained in this process and stored as it goes, with a progress bar on stderr."""

from __future__ import annotations

import argparse
import os
import signal
import socket
from typing import TextIO

from tqdm import tqdm

from core.cli.output import dump_json
from core.experiment.config import ConfigError, describe
from core.experiment.flags import config_from_args
from core.training.reporting import MetricBatch, Reporter, RunInfo, RunResult


class Progress:
    """A reporter that passes everything on to `inner` and draws a tqdm progress bar on `out` (stderr).

    The bar is drawn only where `out` is a terminal; elsewhere (a log file, a pipe, the dashboard's background
    process) the run says once where it trains and stays quiet after that. tqdm redraws at most ten times a
    second, and the trainer reports once per flush, so the bar costs nothing per step."""

    def __init__(self, inner: Reporter, out: TextIO) -> None:
        self.inner, self.out = inner, out
        self.bar: tqdm | None = None

    def on_start(self, info: RunInfo) -> None:
        self.out.write(f"training on {info.device} ({info.dtype}), {info.total_steps} steps\n")
        self.out.flush()
        if _is_terminal(self.out):
            self.bar = tqdm(total=info.total_steps, file=self.out, unit="step", dynamic_ncols=True, leave=True,
                            bar_format="{l_bar}{bar}| step {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")
        self.inner.on_start(info)

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        self.inner.on_metrics(batch, step=step)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def on_finish(self, result: RunResult) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.inner.on_finish(result)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def cmd_train(args: argparse.Namespace, store, out: TextIO, err: TextIO) -> int:
    from core.experiment.data import load_dataset  # noqa: PLC0415 - keep `runs`/`show` free of torch start-up
    from core.store import StoreReporter
    from core.store.sqlstore import MAX_TEXT, text_problem  # the store's rule for names, checked as name:'s
    from core.training.trainer import resolve_device, train

    if args.run_id is not None:
        store.get_run(args.run_id)
    if args.name is not None and (problem := text_problem(args.name)):
        raise ConfigError("name", problem + (" (leave --name out for a name made from the config)"
                                             if not args.name.strip() else ""))
    try:
        cfg = config_from_args(args)
        try:
            data = load_dataset(cfg)  # a broken CSV is bad input: report it before a run exists
        except MemoryError as exc:  # n_samples x n_features past this machine's memory: bad input too
            raise ConfigError("n_samples", f"{cfg.n_samples:,} samples of {cfg.n_features:,} features do not fit "
                                           f"in this machine's memory ({exc})") from None
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
        name = (args.name or args.preset or describe(cfg)).strip()[:MAX_TEXT]
        run_id = store.create_run(name=f"{name[:245]} (dry run)" if args.dry_run else name, config=cfg.to_dict())
    if args.dry_run:  # one step is no result: marked, so that lists and comparisons can tell it apart
        store.add_tag(run_id, "dry-run")
    stored = StoreReporter(store, run_id, pid=os.getpid(), host=socket.gethostname())
    reporter = Progress(stored, err)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = train(cfg, reporter, data=data, device=device, max_steps=1 if args.dry_run else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stored.deleted:  # deleted while it trained (the dashboard's Delete, or `delete`): it stopped, nothing kept
        error = f"run {run_id} was deleted while it trained; training stopped and nothing of it is stored"
        if args.json:
            dump_json({"id": run_id, "name": None, "status": "deleted", "summary": {}, "error": error,
                       "device": str(device), "wall_time_s": result.wall_time_s}, out)
        else:
            out.write(error + "\n")
        return 1
    run = store.get_run(run_id)
    if args.json:
        dump_json({"id": run.id, "name": run.name, "status": result.status, "summary": result.summary,
                   "error": result.error, "device": run.device, "wall_time_s": result.wall_time_s}, out)
    else:
        loss = result.summary.get("final_val_loss")
        out.write(f"run {run.id} {run.name!r}: {result.status}"
                  + (f", final val_loss {loss:.4f}" if isinstance(loss, float) else "")
                  + (f" - {result.error.splitlines()[0]}" if result.error else "") + "\n")
    if result.status == "cancelled" and (result.error or "").startswith("interrupted by the user"):
        return 130  # Ctrl-C or SIGTERM, as a shell reports it: `train && next` stops there
    return 1 if result.status == "failed" else 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
