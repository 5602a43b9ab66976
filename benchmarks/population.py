"""Population training's speed (issue 16), written as its own section of benchmarks/RESULTS.md.

    python benchmarks/population.py               # about 4 minutes on 2 CPU cores (6 repeats)
    python benchmarks/population.py --quick       # fewer repeats and members, a smoke check
    python benchmarks/population.py --device cuda # the in-process figures on a GPU

- Studies, as a user runs them (`python -m core study ...`, start-up included) against one `python -m core train`
  command of one of their cells: a 200-cell study (5 learning rates x BatchNorm x activation x 10 seeds on the
  article-fixed data, hidden 32; budget 2x) and `bn-act-loss` (24 cells; budget 1.5x).
- Per-member cost: a population trained with full diagnostics (and with the loss only) against a bare batched loop
  over the same stacked model, data, batches and optimizer, no diagnostics, no validation; and the operations each
  dispatches a step (`--only dispatch`: counted, so the same on any machine; on a GPU each is a kernel launch,
  and a step of these tiny models is bound by its launches).
- What storing costs: the same population writing every member's runs to SQLite, against keeping them in memory.
- Populations of 1, 10, 100 and 1,000 members against training the same members one after another with
  `trainer.train` (timed on a few members and multiplied: a thousand sequential runs would take half an hour).

Each repeat runs both sides back to back in alternating order (`bench.interleaved`); ratios are medians of the
per-repeat ratios (`bench.paired`), with quartiles. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench import interleaved, machine, merge_rows  # noqa: E402
from benchmarks.bench import paired as paired_quartiles  # noqa: E402
from core.experiment.config import ExperimentConfig, preset  # noqa: E402
from core.experiment.data import load_dataset  # noqa: E402
from core.jobs.spec import expand, named_study  # noqa: E402
from core.training.batched_optim import BatchedOptimizer  # noqa: E402
from core.training.population import member_losses, train_population  # noqa: E402
from core.training.reporting import MemoryReporter  # noqa: E402
from core.training.stacked import StackedClassifier, stacking_order  # noqa: E402
from core.training.trainer import batch_slices, train  # noqa: E402

SECTION = "## Population training"
LRS = ("0.003", "0.01", "0.03", "0.1", "0.3")
BASE = preset("article-fixed").replace(hidden=(32,))


def grid(seeds: int) -> list[ExperimentConfig]:
    """The 200-cell study's configs (with `seeds` seeds)."""
    return [BASE.replace(lr=float(lr), batchnorm=bn, activation=act, seed=s)
            for s in range(seeds) for lr in LRS for bn in (False, True) for act in ("relu", "elu")]


def done(row: dict) -> dict:
    """Print a row as soon as it is measured (a run stopped part-way keeps what it measured), and return it."""
    unit = row.get("unit", "s")
    print(f"{row['case']}: ours {row['ours']:.3f} {unit}, baseline {row['base']:.3f} {unit}, "
          f"ratio {row['paired'][0]:.2f} "
          f"({row['paired'][1]:.2f}-{row['paired'][2]:.2f}), fastest {row['fastest']:.2f}", flush=True)
    return row


def paired(ours: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """`bench.paired`, also for a single repeat."""
    if len(ours) < 2:
        ratio = ours[0] / baseline[0]
        return ratio, ratio, ratio
    return paired_quartiles(ours, baseline)


# ---------------------------------------------------------------------- studies, as commands
def command(args: list[str], db: Path) -> None:
    subprocess.run([sys.executable, "-m", "core", "--db", f"sqlite:///{db}", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_studies(repeats: int, quick: bool, workdir: Path) -> list[dict]:
    seeds = 2 if quick else 10
    cell = workdir / "cell.json"
    study_200 = ["study", "--preset", "article-fixed", "--hidden", "32", "--vary", "lr=" + ",".join(LRS),
                 "--vary", "batchnorm=false,true", "--vary", "activation=relu,elu", "--seeds", str(seeds)]
    canonical = named_study("bn-act-loss")
    canonical_cell = workdir / "bn-act-loss-cell.json"
    canonical_cell.write_text(json.dumps(expand(canonical)[0].cfg.to_dict()))
    cell.write_text(json.dumps(BASE.replace(lr=0.01).to_dict()))
    cases = {
        f"{5 * 2 * 2 * seeds}-cell study (5 lr x BatchNorm x activation x {seeds} seeds, article-fixed data, "
        "hidden 32)": (study_200, ["train", "--config", str(cell)], 2.0),
        "bn-act-loss study (2 x 2 x 2 variants x 3 seeds)": (["study", "--study", "bn-act-loss"],
                                                             ["train", "--config", str(canonical_cell)], 1.5),
    }
    rows = []
    for label, (study, train_cmd, budget) in cases.items():
        run = iter(range(1_000_000))
        fns = {"study": lambda: command(study, workdir / f"s{next(run)}.db"),
               "cell": lambda: command(train_cmd, workdir / f"c{next(run)}.db")}
        t = interleaved(fns, repeats)
        ratio = paired(t["study"], t["cell"])
        rows.append(done(dict(case=f"{label}: `python -m core study` vs one cell's `python -m core train`, start-up "
                              "included", ours=statistics.median(t["study"]), base=statistics.median(t["cell"]),
                         paired=ratio, fastest=min(t["study"]) / min(t["cell"]), budget=f"<= {budget}x",
                         met=ratio[0] <= budget)))
    # a study of the fields batched later (BatchNorm's eps and momentum), as populations and one run at a time
    eps_seeds = 2 if quick else 5
    eps_study = ["study", "--preset", "article-fixed", "--hidden", "32", "--batchnorm", "true", "--vary",
                 "bn_eps=1e-5,1e-3,0.1", "--vary", "bn_momentum=0.1,0.9", "--seeds", str(eps_seeds)]
    run = iter(range(1_000_000))
    fns = {"population": lambda: command(eps_study, workdir / f"p{next(run)}.db"),
           "alone": lambda: command([*eps_study, "--no-population"], workdir / f"a{next(run)}.db")}
    t = interleaved(fns, repeats)
    ratio = paired(t["population"], t["alone"])
    rows.append(done(dict(case=f"{6 * eps_seeds}-run study of BatchNorm's eps x momentum (3 x 2 x {eps_seeds} seeds, "
                          "article-fixed data, hidden 32): `python -m core study` vs the same with `--no-population`, "
                          "start-up included", ours=statistics.median(t["population"]),
                     base=statistics.median(t["alone"]), paired=ratio,
                     fastest=min(t["population"]) / min(t["alone"]), budget="-", met=None)))
    return rows


# ---------------------------------------------------------------------- in process
def bare_batched(cfgs: list[ExperimentConfig], data, device: torch.device, *, validate: bool = False) -> None:
    """The minimum for a population: the same stacked model, batches and optimizer; no diagnostics, no
    validation (unless `validate`: each epoch's validation logits, as a population takes them), no reporting."""
    dtype = torch.float32
    cfgs = [cfgs[i] for i in stacking_order(cfgs)]  # as train_population orders its members
    model = StackedClassifier(cfgs, data.n_features, device=device, dtype=dtype)
    opt = BatchedOptimizer(cfgs, model.values, model.grads)
    losses = member_losses(cfgs, device)
    x = torch.as_tensor(data.x_train, dtype=dtype, device=device)
    y = torch.as_tensor(data.y_train, dtype=dtype, device=device)
    gens = {s: torch.Generator().manual_seed(s) for s in dict.fromkeys(c.seed for c in cfgs)}
    x_val = torch.as_tensor(data.x_val, dtype=dtype, device=device)
    slices = batch_slices(len(y), cfgs[0].batch_size, batchnorm=model.with_bn)
    for _ in range(cfgs[0].epochs):
        perms = {s: torch.randperm(len(y), generator=g) for s, g in gens.items()}
        order = torch.stack([perms[c.seed] for c in cfgs]).to(device)
        for sl in slices:
            idx = order[:, sl]
            z, _ = model.forward(x[idx])
            model.grads.zero_()
            losses(z, y[idx]).sum().backward()
            opt.step()
        if validate:
            model.validate(x_val)
    if device.type == "cuda":
        torch.cuda.synchronize()


def population(cfgs: list[ExperimentConfig], data, device: torch.device, **kw) -> None:
    train_population(cfgs, [MemoryReporter() for _ in cfgs], data=data, device=device, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def statistics_taken(in_window: bool) -> Iterator[None]:
    """Populations trained inside take their update statistics in the window (`population_step.InWindow`, a
    GPU's way) or at the step (`AtStep`, the CPU's), whatever the device; the choice as it was afterwards."""
    from core.training import population_step

    chosen, population_step.IN_WINDOW = population_step.IN_WINDOW, in_window
    try:
        yield
    finally:
        population_step.IN_WINDOW = chosen


def bench_overhead(repeats: int, quick: bool, device: torch.device) -> list[dict]:
    """Full diagnostics and the loss alone against the bare batched loop, and full diagnostics with the update
    statistics taken the other device's way (`population_step.tracker`: at the step on the CPU, in the window on a
    GPU), which shows why each device takes its own."""
    cfgs = grid(2 if quick else 10)
    data = load_dataset(cfgs[0])
    other = device.type == "cpu"  # IN_WINDOW for the other way: in the window on the CPU, at the step elsewhere

    def other_way(members: list[ExperimentConfig]) -> None:
        with statistics_taken(in_window=other):
            population(members, data, device)

    fns = {"bare": lambda: bare_batched(cfgs, data, device)}
    for diag in ("full", "loss"):  # the configs made before the clock starts, as the bare loop's are
        fns[diag] = lambda members=[c.replace(diagnostics=diag) for c in cfgs]: population(members, data, device)
    fns["other"] = lambda members=[c.replace(diagnostics="full") for c in cfgs]: other_way(members)
    fns["validated"] = lambda: bare_batched(cfgs, data, device, validate=True)
    for fn in fns.values():
        fn()  # warm-up
    t = interleaved(fns, repeats)
    rows = []
    labels = {"full": "diagnostics=full", "loss": "diagnostics=loss",
              "other": "diagnostics=full, the update statistics taken " + (
                  "in the window (a GPU's way)" if other else "at the step (the CPU's way)")}
    for diag, budget in (("full", 1.15), ("loss", 1.05), ("other", None), ("validated", None)):
        ratio = paired(t[diag], t["bare"])
        case = (f"{len(cfgs)} members of the study above, {labels[diag]}, {device.type}: train_population vs a bare "
                "batched loop (same model, batches, optimizer)") if diag in labels else (
            f"{len(cfgs)} members of the study above, {device.type}: the bare batched loop with each epoch's "
            "validation pass (which every run takes, the loss alone too) vs the bare loop without it")
        rows.append(done(dict(case=case,
                         ours=statistics.median(t[diag]), base=statistics.median(t["bare"]), paired=ratio,
                         fastest=min(t[diag]) / min(t["bare"]), budget=f"<= {budget}x" if budget else "-",
                         met=ratio[0] <= budget if budget else None)))
    return rows


def dispatched(fn: Callable[[], object]) -> int:
    """How many operations `fn` dispatches to torch's kernels (views included): on a GPU, where a step of these
    tiny models is bound by launching its kernels, the count of a step is its cost."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's hook
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


def bench_dispatch(quick: bool, device: torch.device) -> list[dict]:
    """Operations dispatched a step (counted, not timed: the same on any machine) by a population with full
    diagnostics and with the loss only, against the bare batched loop: the per-step difference between two
    lengths of the same training (so the start and the end cancel out; both flush when their window fills, not by
    the clock, which would make the count depend on the machine's speed), with the update statistics taken as on
    a GPU (`population_step.InWindow`) whatever the device."""
    cfgs = [c.replace(epochs=1) for c in grid(1)]  # 20 members
    data = load_dataset(cfgs[0])
    steps_per_epoch = len(batch_slices(len(data.y_train), cfgs[0].batch_size, batchnorm=True))

    def per_step(train: Callable[[list[ExperimentConfig]], object]) -> float:
        short, long = 2, 2 + (2 if quick else 6)
        counts = [dispatched(lambda e=e: train([c.replace(epochs=e) for c in cfgs])) for e in (short, long)]
        return (counts[1] - counts[0]) / ((long - short) * steps_per_epoch)

    with statistics_taken(in_window=True):
        bare = per_step(lambda members: bare_batched(members, data, device))
        # flushed by its window, not by the clock, whose flushes would make the count depend on the machine's speed
        counts = {diag: per_step(lambda members, d=diag: population([c.replace(diagnostics=d) for c in members],
                                                                  data, device, flush_every_s=1e9))
                  for diag in ("full", "loss")}
    return [done(dict(case=f"{len(cfgs)} members, diagnostics={diag}: operations dispatched a step by "
                      "train_population vs a bare batched loop (counted: on a GPU each is a launch)",
                      ours=n, base=bare, paired=(n / bare,) * 3, fastest=n / bare, budget="-", met=None,
                      unit="ops")) for diag, n in counts.items()]


def bench_store(repeats: int, quick: bool, device: torch.device, workdir: Path) -> list[dict]:
    """The same 200 members with full diagnostics, each writing its runs to SQLite (`StoreReporter`, as a study's
    worker does) against keeping them in memory: what storing a population's flushes costs."""
    from core.store import Store
    from core.store.reporter import StoreReporter

    cfgs = grid(2 if quick else 10)
    data = load_dataset(cfgs[0])
    stores = []
    for i in range(repeats + 1):  # each its own fresh database and runs, made before the clock starts
        store = Store(f"sqlite:///{workdir / f'population-{i}.db'}")
        stores.append((store, store.create_runs([(f"r{k}", c.to_dict()) for k, c in enumerate(cfgs)])))
    pool = iter(stores)

    def stored() -> None:
        store, ids = next(pool)
        train_population(cfgs, [StoreReporter(store, run_id) for run_id in ids], data=data, device=device)

    fns = {"sqlite": stored, "memory": lambda: population(cfgs, data, device)}
    for fn in fns.values():
        fn()  # warm-up
    t = interleaved(fns, repeats)
    for store, _ in stores:
        store.close()
    ratio = paired(t["sqlite"], t["memory"])
    return [done(dict(case=f"{len(cfgs)} members, full diagnostics, {device.type}: every member's runs written to "
                      "SQLite (`StoreReporter`) vs kept in memory (`MemoryReporter`)",
                      ours=statistics.median(t["sqlite"]), base=statistics.median(t["memory"]), paired=ratio,
                      fastest=min(t["sqlite"]) / min(t["memory"]), budget="-", met=None))]


def bench_sizes(repeats: int, quick: bool, device: torch.device) -> list[dict]:
    """Populations of 1..1000 against sequential single runs of the same configs (timed on a few of them)."""
    sizes = (1, 10, 100) if quick else (1, 10, 100, 1000)
    cfgs = [BASE.replace(lr=float(LRS[i % 5]), batchnorm=bool(i // 5 % 2), seed=i) for i in range(max(sizes))]
    data = load_dataset(cfgs[0])
    sample = cfgs[:3]
    rows = []
    for fn in (lambda: train(sample[0], MemoryReporter(), data=data, device=device),
               lambda: population(cfgs[:2], data, device)):
        fn()  # warm-up
    for n in sizes:
        fns = {"population": lambda n=n: population(cfgs[:n], data, device),
               "sequential": lambda: [train(c, MemoryReporter(), data=data, device=device) for c in sample]}
        t = interleaved(fns, repeats if n < 1000 else max(1, repeats // 3))
        per_run = [s / len(sample) for s in t["sequential"]]
        ratio = paired([per_run_i * n for per_run_i in per_run], t["population"])  # throughput: sequential / ours
        rows.append(done(dict(case=f"population of {n} (article-fixed data, hidden 32, BatchNorm on and off, full "
                              f"diagnostics, {device.type}): throughput vs {n} sequential `trainer.train` runs",
                         ours=statistics.median(t["population"]), base=statistics.median(per_run) * n,
                         paired=ratio, fastest=min(per_run) * n / min(t["population"]),
                         budget=">= 50x at 1,000 (on a GPU)" if n == 1000 else "-",
                         met=(ratio[0] >= 50) if n == 1000 else None, speedup=True)))
    return rows


# ---------------------------------------------------------------------- report
def section(rows: list[dict], *, repeats: int, quick: bool) -> str:
    lines = [SECTION, "", f"Machine: {machine()}. Written by `python benchmarks/population.py`"
             + (" --quick (smaller sizes: `met` not judged)" if quick else "") + f", {repeats} repeats.", "",
             "Each repeat runs both sides back to back in alternating order; `ratio` is the median of the per-repeat "
             "ratios (quartiles beside it). For the population sizes it is a speed-up: the sequential time over "
             "the population's (the sequential time is that of a few single runs, times the population's size). "
             "`fastest` is the same ratio from each side's fastest repeat: load from other processes only ever slows "
             "a repeat down, so it is the figure least disturbed on a shared machine.",
             "", "| case | ours | baseline | ratio | quartiles | fastest | budget | met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "-" if quick or r["met"] is None else ("yes" if r["met"] else "no")
        unit = r.get("unit", "s")
        lines.append(f"| {r['case']} | {r['ours']:.2f} {unit} | {r['base']:.2f} {unit} | {r['paired'][0]:.2f}"
                     + ("x faster" if r.get("speedup") else "") + f" | {r['paired'][1]:.2f}-{r['paired'][2]:.2f} "
                     f"| {r['fastest']:.2f} | {r['budget']} | {met} |")
    return "\n".join(lines) + "\n"


# each `--only` part, by what its cases say (the first that matches: a dispatch row names the bare loop too)
GROUPS = {"studies": "`python -m core study`", "dispatch": "operations dispatched", "overhead": "a bare batched loop",
          "store": "written to SQLite", "sizes": "sequential `trainer.train` runs"}


def _group(line: str) -> str | None:
    return next((group for group, mark in GROUPS.items() if mark in line), None)


def write_section(text: str, path: Path) -> None:
    """Replace this benchmark's section of RESULTS.md (up to the next `## ` heading), or append it. A run of some
    parts (`--only`) keeps the rows of the parts it did not run, and the notes under the old table with them."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(old)
    if found:
        lines = text.rstrip("\n").splitlines()
        ours = [line for line in lines if line.startswith("| ") and _group(line)]
        merged, notes = merge_rows(found.group(0).rstrip("\n").splitlines(), ours, _group)
        at = lines.index(ours[0]) if ours else len(lines)
        lines = lines[:at] + merged + lines[at + len(ours):]
        text = "\n".join(lines) + "\n" + (f"\n{notes}\n" if notes else "")
    new = pattern.sub(lambda _: text + "\n", old) if found else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=("studies", "dispatch", "overhead", "store", "sizes"), action="append")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 6)  # this machine moves a single figure by a third
    device = torch.device(args.device)
    only = set(args.only or ("studies", "dispatch", "overhead", "store", "sizes"))
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if "studies" in only and device.type == "cpu":  # the commands train where `auto` puts them
            rows += bench_studies(repeats, args.quick, Path(tmp))
        if "dispatch" in only:
            rows += bench_dispatch(args.quick, device)
        if "overhead" in only:
            rows += bench_overhead(repeats, args.quick, device)
        if "store" in only:
            rows += bench_store(repeats, args.quick, device, Path(tmp))
        if "sizes" in only:
            rows += bench_sizes(repeats, args.quick, device)
    text = section(rows, repeats=repeats, quick=args.quick)
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)")
    write_section(text, Path(args.out))


if __name__ == "__main__":
    main()
