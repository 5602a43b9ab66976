"""Lossboard's speed, measured against bare baselines in the same run, written to benchmarks/RESULTS.md.

    python benchmarks/bench.py            # everything, a few minutes on 2 CPU cores
    python benchmarks/bench.py --quick    # fewer repeats and smaller sizes, for a smoke check

Each repeat runs our side and its baseline back to back, in alternating order, and the ratio reported is the
median over repeats of ours / baseline within a repeat, with its quartiles. This project's 2-core VM changes
speed by 10-25% from one second to the next, so even paired ratios of training times move by several percent
between invocations: `--instructions` adds CPU instruction counts from valgrind, which do not move, to check the
5% budget. Nothing here asserts a time: the table is for people. `--device cuda` adds the training figures on a
GPU.

    python benchmarks/bench.py --instructions   # also the instruction counts (about 13 more minutes)
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from itertools import repeat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.experiment.config import ExperimentConfig, preset  # noqa: E402
from core.experiment.data import load_dataset  # noqa: E402
from core.experiment.losses import loss_fn  # noqa: E402
from core.experiment.models import build_model  # noqa: E402
from core.training.reporting import MemoryReporter, MetricBatch  # noqa: E402
from core.store import Store, StoreReporter  # noqa: E402
from core.training.trainer import batch_slices, make_optimizer, train  # noqa: E402


@dataclass
class Row:
    section: str
    case: str
    ours: float
    baseline: float
    unit: str
    budget: str
    ok: bool | None
    paired: tuple[float, float, float] | None = None  # median, first and third quartile of per-repeat ratios
    fastest: float | None = None  # ours' fastest repeat / the baseline's fastest (timeit's lower bound)

    @property
    def ratio(self) -> float:
        if self.paired is not None:
            return self.paired[0]
        return self.ours / self.baseline if self.baseline else float("nan")


# ---------------------------------------------------------------------- training
def bare_loop(cfg: ExperimentConfig, data, device: torch.device) -> None:
    """The minimum: same model, data, batch size, steps and optimizer; no diagnostics, no validation."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.n_features).to(device)
    opt = make_optimizer(cfg, model.parameters())
    compute_loss = loss_fn(cfg)
    x = torch.as_tensor(data.x_train, dtype=torch.float32, device=device)
    y = torch.as_tensor(data.y_train, dtype=torch.float32, device=device)
    slices = batch_slices(len(y), cfg.batch_size, batchnorm=cfg.batchnorm)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen).to(device)
        for sl in slices:
            idx = order[sl]
            loss = compute_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Every function's times, one per repeat. Each repeat runs every function once, the order reversed on every
    other repeat (a b c, c b a, ...), so that a change in the machine's speed touches every side alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return times


def paired(ours: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """Median, first and third quartile of ours[i] / baseline[i]."""
    q = statistics.quantiles([a / b for a, b in zip(ours, baseline)], n=4, method="inclusive")
    return q[1], q[0], q[2]


def training_cases(quick: bool) -> dict[str, ExperimentConfig]:
    return {
        "article model (Linear(10,1)+ReLU+Sigmoid, BCELoss, SGD)": preset("article-example").replace(
            epochs=10 if quick else 40, n_samples=2000),
        "2x64 MLP + BatchNorm (Adam, logits)": ExperimentConfig(
            hidden=(64, 64), batchnorm=True, loss="bce_with_logits", epochs=5 if quick else 20, n_samples=2000),
    }


def bench_training(repeats: int, quick: bool, device: torch.device) -> list[Row]:
    rows = []
    cases = training_cases(quick)
    budgets = {"full": 1.15, "loss": 1.05}
    for label, cfg in cases.items():
        data = load_dataset(cfg)
        configs = {diag: cfg.replace(diagnostics=diag) for diag in budgets}
        fns: dict[str, Callable[[], object]] = {"bare": lambda: bare_loop(cfg, data, device)}
        for diag, c in configs.items():
            fns[diag] = lambda c=c: train(c, MemoryReporter(), data=data, device=device)
        for fn in fns.values():  # warm-up: first-call costs (lazy imports, allocator) out of the figures
            fn()
        t = interleaved(fns, repeats)
        steps = cfg.epochs * len(batch_slices(len(data.y_train), cfg.batch_size, batchnorm=cfg.batchnorm))
        for diag, budget in budgets.items():
            ratio = paired(t[diag], t["bare"])
            rows.append(Row(f"training ({device.type})", f"{label}, diagnostics={diag}, {steps} steps",
                            statistics.median(t[diag]), statistics.median(t["bare"]), "s", f"<= {budget}x",
                            ratio[0] <= budget, ratio, min(t[diag]) / min(t["bare"])))
    return rows


# ---------------------------------------------------------------------- store
def fake_rows(n_steps: int, keys: tuple[str, ...], start: int = 0) -> MetricBatch:
    """One flush of `n_steps` steps x `keys`, in the columns the trainer reports."""
    rng = np.random.default_rng(0)
    values = rng.random((len(keys), n_steps)).tolist()
    steps = list(range(start + 1, start + n_steps + 1))
    batch = MetricBatch()
    for j, k in enumerate(keys):
        batch.add_series(k, steps, [s // 100 for s in steps], values[j], [0.001 * (s - 1) for s in steps])
    return batch


def bench_store(repeats: int, quick: bool, workdir: Path) -> list[Row]:
    n_runs, n_steps, keys = (5, 2000, ("a", "b", "c", "d")) if quick else (20, 5000, ("train_loss", "clamp_frac",
                                                                                       "grad_norm", "logit_std"))
    batch = 500  # the trainer flushes about once a second; 500 steps is a generous batch on a fast loop
    all_rows = [fake_rows(batch, keys, start) for start in range(0, n_steps, batch)]
    n_values = n_runs * n_steps * len(keys)

    def ours_ingest() -> None:
        path = workdir / f"ours-{time.perf_counter_ns()}.db"
        store = Store(f"sqlite:///{path}")
        for r in range(n_runs):
            run_id = store.create_run(name=f"r{r}", config={})
            rep = StoreReporter(store, run_id)
            for i, chunk in enumerate(all_rows):
                rep.on_metrics(chunk, step=(i + 1) * batch)
        store.close()

    schema_db = workdir / "schema.db"
    Store(f"sqlite:///{schema_db}").close()  # the same schema, made by the store's migrations

    def raw_ingest() -> None:
        path = workdir / f"raw-{time.perf_counter_ns()}.db"
        path.write_bytes(schema_db.read_bytes())
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        with con:
            for r in range(n_runs):
                run_id = con.execute("INSERT INTO runs (name, status, config_json, summary_json, created_at, "
                                     "cancel_requested, progress_step, notes) VALUES (?, 'running', '{}', '{}', "
                                     "'2026-01-01', 0, 0, '')", (f"r{r}",)).lastrowid
                con.executemany("INSERT INTO metrics (run_id, key, step, epoch, value, wall_time) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                [p for c in all_rows for p in zip(repeat(run_id), c.keys, c.steps, c.epochs,
                                                                      c.values, c.wall_times)])
        con.close()

    t = interleaved({"ours": ours_ingest, "raw": raw_ingest}, repeats)
    rate = paired(t["raw"], t["ours"])  # a ratio of rates: raw time / our time
    rows = [Row("store ingest", f"{n_runs} runs x {n_steps} steps x {len(keys)} metrics ({n_values:,} values), "
                f"rate in values/s", n_values / statistics.median(t["ours"]), n_values / statistics.median(t["raw"]),
                "values/s", ">= 0.5x raw", rate[0] >= 0.5, rate)]

    # read: a store filled once, read many times
    read_db = workdir / "read.db"
    store = Store(f"sqlite:///{read_db}")
    ids = []
    for r in range(max(20, n_runs)):
        run_id = store.create_run(name=f"r{r}", config={})
        for chunk in all_rows:
            store.log_metrics(run_id, chunk)
        ids.append(run_id)
    for label, run_ids, wanted in (("5 runs x 2 metrics", ids[:5], list(keys[:2])),
                                   ("20 runs x 1 metric", ids[:20], [keys[0]])):
        def ours_read() -> None:
            frame = store.metrics_frame(run_ids, wanted)
            for (_, _), g in frame.groupby(["run_id", "key"], sort=False):
                g["step"].to_numpy(), g["value"].to_numpy()

        def raw_read() -> None:
            con = sqlite3.connect(read_db)
            for rid in run_ids:
                for key in wanted:
                    got = con.execute("SELECT step, value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step",
                                      (rid, key)).fetchall()
                    np.array(got, dtype=np.float64)
            con.close()

        t = interleaved({"ours": ours_read, "raw": raw_read}, repeats)
        ratio = paired(t["ours"], t["raw"])
        rows.append(Row("store read", f"{label} ({len(run_ids) * len(wanted) * n_steps:,} points) into arrays",
                        statistics.median(t["ours"]), statistics.median(t["raw"]), "s", "<= 2x raw", ratio[0] <= 2.0,
                        ratio))
    store.close()

    from benchmarks import mlflow_compare  # noqa: PLC0415

    if mlflow_compare.available():
        # MLflow logs about 5,000 values/s here: one run keeps its repeats to seconds
        rows += mlflow_compare.bench_mlflow(max(3, repeats // 2), workdir, n_runs=1, chunks=all_rows, keys=keys)
    return rows


# ---------------------------------------------------------------------- report
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def write_results(rows: list[Row], path: Path, *, repeats: int, training_repeats: int, quick: bool = False) -> str:
    lines = ["# Benchmark results", "", f"Machine: {machine()}.", "",
             f"Times are medians of {repeats} repeats (training: {training_repeats}). Each repeat runs our side and "
             "its baseline back to back, in alternating order; the ratio is the median over repeats of ours / "
             "baseline within the repeat (for rates, the ratio of rates), and the quartiles of those per-repeat "
             "ratios show how much the machine moved. For training, `fastest` is ours' fastest repeat over the "
             "baseline's fastest: noise on a shared machine only ever slows a repeat down, so this is the cost with "
             "the least interference (what `timeit` reports). `met` is judged on the median ratio. Written by "
             "`python benchmarks/bench.py`.", ""]
    if any(r.unit == "instr" for r in rows):
        from benchmarks.instructions import LONG, REPEATS, SHORT  # noqa: PLC0415

        lines += [f"Instruction counts (`--instructions`) come from valgrind's callgrind, {REPEATS} repeats per case "
                  "in one process, sides in rotating order; each is a side's count over a "
                  f"{LONG}-epoch training minus its count over a {SHORT}-epoch one, per step of the difference, and "
                  "`met` is judged on their median ratio.", ""]
    if quick:
        lines += ["A `--quick` run: the sizes are smaller than the ones the budgets are set for, where fixed costs "
                  "weigh more, so `met` is not judged.", ""]
    lines += ["| section | case | ours | baseline | ratio | quartiles | fastest | budget | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = {"values/s": lambda v: f"{v:,.0f}/s", "MB": lambda v: f"{v:.2f} MB", "instr": lambda v: f"{v:,.0f}"
               }.get(r.unit, lambda v: f"{v:.4f} s")
        met = "-" if quick or r.ok is None else ("yes" if r.ok else "no")
        spread = f"{r.paired[1]:.2f}-{r.paired[2]:.2f}" if r.paired else "-"
        fastest = f"{r.fastest:.3f}" if r.fastest is not None else "-"
        lines.append(f"| {r.section} | {r.case} | {fmt(r.ours)} | {fmt(r.baseline)} | {r.ratio:.3f} | {spread} "
                     f"| {fastest} | {r.budget} | {met} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of the store and dashboard figures")
    parser.add_argument("--training-repeats", type=int, default=None, help="repeats of the training figures")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--only", choices=("training", "store", "dashboard", "instructions"), action="append")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the training instructions with valgrind (about 13 more minutes)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    training_repeats = args.training_repeats or (4 if args.quick else 30)
    only = set(args.only or ("training", "store", "dashboard"))
    if args.instructions:
        only.add("instructions")
    torch.set_num_threads(1)  # timings comparable across machines; both sides run under the same setting
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "training" in only:
            rows += bench_training(training_repeats, args.quick, torch.device(args.device))
        if "store" in only:
            rows += bench_store(repeats, args.quick, Path(tmp))
        if "dashboard" in only:
            from benchmarks.dashboard import bench_dashboard  # noqa: PLC0415

            rows += bench_dashboard(repeats, args.quick, Path(tmp))
        if "instructions" in only:
            from benchmarks import instructions  # noqa: PLC0415

            if instructions.available():
                rows += instructions.bench_instructions()
            else:
                print("valgrind is not installed: no instruction counts", file=sys.stderr)
    print(write_results(rows, Path(args.out), repeats=repeats, training_repeats=training_repeats, quick=args.quick))


if __name__ == "__main__":
    main()
