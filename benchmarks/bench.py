"""Lossboard's speed, measured against bare baselines in the same run, written to benchmarks/RESULTS.md.

    python benchmarks/bench.py            # everything, a few minutes on 2 CPU cores
    python benchmarks/bench.py --quick    # fewer repeats and smaller sizes, for a smoke check

Each repeat runs our side and its baseline back to back, in alternating order, and the ratio reported is the
median over repeats of ours / baseline within a repeat, with its quartiles. This project's 2-core VM changes
speed by 10-25% from one second to the next, so even paired ratios of training times move by several percent
between invocations: `--instructions` adds CPU instruction counts from valgrind, which do not move, to check the
5% budget. Nothing here asserts a time: the table is for people. `--device cuda` adds the training figures on a
GPU, and population training's (populations of 1, 10, 100 and 1,000 members against sequential training, and a
population's per-member cost against a bare batched loop, and the operations it dispatches a step; `--only
populations` on any device), written to the "Population training" section by `benchmarks/population.py`'s code.

    python benchmarks/bench.py --instructions   # also the instruction counts (about 13 more minutes)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core.experiment.config import ExperimentConfig, preset  # noqa: E402
from core.experiment.data import load_dataset  # noqa: E402
from core.experiment.losses import loss_fn  # noqa: E402
from core.experiment.models import build_model  # noqa: E402
from core.training.reporting import MemoryReporter  # noqa: E402
from core.training.trainer import batch_slices, make_optimizer, train  # noqa: E402

KEYS = ("train_loss", "clamp_frac", "grad_norm", "logit_std")


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
    gpu = f", {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def merge_rows(old_lines: list[str], new_rows: list[str], group: Callable[[str], str | None], *,
               keep_notes: bool = False) -> tuple[list[str], str]:
    """A table written by a run of some parts (`--only`): the old table's rows (among `old_lines`, those `group`
    names) with each group the new rows measured replaced, where it was, by the new rows (a group the old table
    lacks goes at the end; when no old row is kept, the new rows as they are); and the notes under the old table,
    when an old row is kept or with `keep_notes`."""
    new: dict[str | None, list[str]] = {}
    for line in new_rows:
        new.setdefault(group(line), []).append(line)
    merged: list[str] = []
    kept = False
    for line in old_lines:
        name = group(line) if line.startswith("| ") else None
        if name is None:
            continue
        if name not in new:
            merged.append(line)
            kept = True
        elif new[name]:
            merged += new[name]
            new[name] = []  # placed where the group was
    merged += [line for lines in new.values() for line in lines]
    last = max((i for i, line in enumerate(old_lines) if line.startswith("|")), default=None)
    notes = "\n".join(old_lines[last + 1:]).strip() if (kept or keep_notes) and last is not None else ""
    return (merged if kept else list(new_rows)), notes


def _section(line: str) -> str | None:
    """The section of one of the table's rows (None for its header)."""
    section = line[2:].split(" | ", 1)[0]
    return None if section == "section" or line.startswith("|---") else section


def write_results(rows: list[Row], path: Path, *, repeats: int, training_repeats: int, quick: bool = False) -> str:
    lines = ["# Benchmark results", "", f"Machine: {machine()}.", "",
             f"Times are medians of {repeats} repeats (training: {training_repeats}). Each repeat runs our side and "
             "its baseline back to back, in alternating order; the ratio is the median over repeats of ours / "
             "baseline within the repeat (for rates, the ratio of rates), and the quartiles of those per-repeat "
             "ratios show how much the machine moved. For training, `fastest` is ours' fastest repeat over the "
             "baseline's fastest: noise on a shared machine only ever slows a repeat down, so this is the cost with "
             "the least interference (what `timeit` reports). `met` is judged on the median ratio. Written by "
             "`python benchmarks/bench.py`.", ""]
    old = path.read_text() if path.exists() else ""
    at = old.find("\n## ")  # the other benchmarks' sections (population, diagnosis, scale-out) stay
    top, rest = (old[:at], old[at:]) if at >= 0 else (old, "")
    new: list[str] = []
    for r in rows:
        fmt = {"values/s": lambda v: f"{v:,.0f}/s", "MB": lambda v: f"{v:.2f} MB", "instr": lambda v: f"{v:,.0f}",
               "B": lambda v: f"{v:.2f} B"}.get(r.unit, lambda v: f"{v:.4f} s")
        met = "-" if quick or r.ok is None else ("yes" if r.ok else "no")
        spread = f"{r.paired[1]:.2f}-{r.paired[2]:.2f}" if r.paired else "-"
        fastest = f"{r.fastest:.3f}" if r.fastest is not None else "-"
        new.append(f"| {r.section} | {r.case} | {fmt(r.ours)} | {fmt(r.baseline)} | {r.ratio:.3f} | {spread} "
                   f"| {fastest} | {r.budget} | {met} |")
    # a run of some sections (`--only`) replaces those sections' rows and keeps the others', and the notes below
    merged, notes = merge_rows(top.splitlines(), new, _section, keep_notes=True)
    if any(line.startswith("| training instructions") for line in merged):
        from benchmarks.instructions import LONG, REPEATS, SHORT  # noqa: PLC0415

        lines += [f"Instruction counts (`--instructions`) come from valgrind's callgrind, {REPEATS} repeats per case "
                  "in one process, sides in rotating order; each is a side's count over a "
                  f"{LONG}-epoch training minus its count over a {SHORT}-epoch one, per step of the difference, and "
                  "`met` is judged on their median ratio.", ""]
    if quick:
        lines += ["A `--quick` run: the sizes are smaller than the ones the budgets are set for, where fixed costs "
                  "weigh more, so `met` is not judged.", ""]
    lines += ["| section | case | ours | baseline | ratio | quartiles | fastest | budget | met |",
              "|---|---|---|---|---|---|---|---|---|", *merged]
    text = "\n".join(lines) + "\n" + (f"\n{notes}\n" if notes else "")
    path.write_text(text + rest)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of the store and dashboard figures")
    parser.add_argument("--training-repeats", type=int, default=None, help="repeats of the training figures")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--only", choices=("training", "store", "dashboard", "instructions", "populations"),
                        action="append")
    parser.add_argument("--migration", type=int, default=None, metavar="MB",
                        help="also convert a schema-0001 database of about MB megabytes and report the converting "
                             "process's peak memory (1000: a few minutes)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the training instructions with valgrind (about 13 more minutes)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    training_repeats = args.training_repeats or (4 if args.quick else 30)
    only = set(args.only or ("training", "store", "dashboard", *(("populations",) if args.device != "cpu" else ())))
    if args.instructions:
        only.add("instructions")
    torch.set_num_threads(1)  # timings comparable across machines; both sides run under the same setting
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "training" in only:
            rows += bench_training(training_repeats, args.quick, torch.device(args.device))
        if "store" in only:
            from benchmarks import mlflow_compare, store  # noqa: PLC0415

            rows += store.bench_store(repeats, args.quick, Path(tmp))
            rows += store.bench_size(Path(tmp), quick=args.quick)
            if mlflow_compare.available():  # MLflow logs about 5,000 values/s here: one run keeps it to seconds
                flushes = [store.fake_flush(500, KEYS, s) for s in range(0, 5000, 500)]
                rows += mlflow_compare.bench_mlflow(max(3, repeats // 2), Path(tmp), n_runs=1, chunks=flushes,
                                                    keys=KEYS)
        if args.migration:
            from benchmarks import store  # noqa: PLC0415

            rows += store.bench_migration(Path(tmp), megabytes=args.migration)
        if "dashboard" in only:
            from benchmarks.dashboard import bench_dashboard  # noqa: PLC0415

            rows += bench_dashboard(repeats, args.quick, Path(tmp))
        if "instructions" in only:
            from benchmarks import instructions  # noqa: PLC0415

            if instructions.available():
                rows += instructions.bench_instructions()
            else:
                print("valgrind is not installed: no instruction counts", file=sys.stderr)
        if "populations" in only:
            from benchmarks import population  # noqa: PLC0415

            device, pop_repeats = torch.device(args.device), 2 if args.quick else 3
            found = population.bench_dispatch(args.quick, device)
            found += population.bench_overhead(pop_repeats, args.quick, device)
            found += population.bench_sizes(pop_repeats, args.quick, device)
            text = population.section(found, repeats=pop_repeats, quick=args.quick)
            print(text)
            population.write_section(text, Path(args.out))
    if rows:
        print(write_results(rows, Path(args.out), repeats=repeats, training_repeats=training_repeats,
                            quick=args.quick))


if __name__ == "__main__":
    main()
