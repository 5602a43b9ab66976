"""Training cost in CPU instructions, counted by valgrind's callgrind: unlike seconds, the count does not move with
the machine's load, so a 5% budget can be checked on a shared VM. Optional (`bench.py --instructions`).

One valgrind process per case imports everything once, warms every side up, then trains each side `SHORT` and
`LONG` epochs, `REPEATS` times in rotating order. Only the trainings are counted: the child calls
`os.getppid()` just before one (callgrind zeroes its counters there, `--zero-before`) and `os.getpgrp()` just
after (callgrind writes the counts so far, `--dump-before`). A side's cost is its LONG count minus its SHORT
count: set-up and first-call costs cancel out, and what is left is the cost of the extra epochs, for our trainer
and for the bare loop alike. Three things that depend on the clock or on chance are held still: the objects
alive before training are frozen and each training starts from a collected heap (a full pass of the cyclic
collector over torch's objects costs some 300M instructions and lands in one run or another), the trainer
flushes by step count only (under valgrind a second is ~20 steps, not the ~3,000 it is natively), and the idle
threads of numpy's OpenBLAS, which spin for a time that depends on the clock, are not started.

    python benchmarks/instructions.py CASE   # the child valgrind runs
"""

from __future__ import annotations

import gc
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHORT, LONG = 2, 12
REPEATS = 3
SIDES = ("bare", "loss", "full")
CASES = ("article", "mlp")  # the first and second of bench.training_cases
BUDGETS = {"full": 1.15, "loss": 1.05}


def available() -> bool:
    return shutil.which("valgrind") is not None


def schedule() -> list[tuple[int, str, int]]:
    """(repeat, side, epochs) of every counted training, in the order the child runs them."""
    runs = []
    for r in range(REPEATS):
        sides = SIDES[r % len(SIDES):] + SIDES[:r % len(SIDES)]  # each side first once
        runs += [(r, side, epochs) for side in sides for epochs in (SHORT, LONG)]
    return runs


def count(case: str) -> dict[tuple[int, str, int], int]:
    """Instructions of every counted training of one case (every thread), by (repeat, side, epochs)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--zero-before=getppid",
                               "--dump-before=getpgrp", "--dump-instr=no", sys.executable,
                               str(Path(__file__).resolve()), case], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the callgrind child failed:\n{done.stderr[-3000:]}")
        runs = schedule()
        totals = [_total(Path(f"{out}.{i}")) for i in range(1, len(runs) + 1)]
    return dict(zip(runs, totals))


def _total(path: Path) -> int:
    found = re.search(r"^(?:totals|summary):\s*(\d+)", path.read_text(), re.MULTILINE)
    if not found:
        raise RuntimeError(f"{path.name} holds no instruction total")
    return int(found.group(1))


def bench_instructions(workers: int = 2):
    """One row per case and diagnostics level: our extra epochs' instructions / the bare loop's, as the median
    over repeats (with the quartiles of the per-repeat ratios)."""
    from benchmarks.bench import Row, training_cases  # noqa: PLC0415

    with ThreadPoolExecutor(workers) as pool:
        counts = dict(zip(CASES, pool.map(count, CASES)))
    rows = []
    for case, (label, cfg) in zip(CASES, training_cases(quick=False).items()):
        steps = (LONG - SHORT) * _steps_per_epoch(cfg)
        c = counts[case]
        extra = {side: [(c[r, side, LONG] - c[r, side, SHORT]) / steps for r in range(REPEATS)] for side in SIDES}
        for diag, budget in BUDGETS.items():
            ratios = [a / b for a, b in zip(extra[diag], extra["bare"])]
            q = statistics.quantiles(ratios, n=4, method="inclusive")
            rows.append(Row("training instructions (callgrind)", f"{label}, diagnostics={diag}, instructions per "
                            f"step over {steps} steps", statistics.median(extra[diag]),
                            statistics.median(extra["bare"]), "instr", f"<= {budget}x", q[1] <= budget,
                            paired=(q[1], q[0], q[2])))
    return rows


def _steps_per_epoch(cfg) -> int:
    from core.experiment.data import load_dataset  # noqa: PLC0415
    from core.training.trainer import batch_slices  # noqa: PLC0415

    return len(batch_slices(len(load_dataset(cfg).y_train), cfg.batch_size, batchnorm=cfg.batchnorm))


def _child(case: str) -> None:
    """Run the schedule; each counted training sits between os.getppid() and os.getpgrp()."""
    import torch  # noqa: PLC0415

    from benchmarks.bench import bare_loop, training_cases  # noqa: PLC0415
    from core.experiment.data import load_dataset  # noqa: PLC0415
    from core.training.reporting import MemoryReporter  # noqa: PLC0415
    from core.training.trainer import train  # noqa: PLC0415

    torch.set_num_threads(1)
    base = list(training_cases(quick=False).values())[CASES.index(case)]
    data = load_dataset(base)
    device = torch.device("cpu")

    def run(side: str, epochs: int) -> None:
        cfg = base.replace(epochs=epochs)
        if side == "bare":
            bare_loop(cfg, data, device)
        else:
            train(cfg.replace(diagnostics=side), MemoryReporter(), data=data, device=device, flush_every_s=math.inf)

    for side in SIDES:  # first-call costs: lazy imports, kernels' first dispatch, the allocator's first pages
        run(side, SHORT)
    gc.collect()
    gc.freeze()
    for _, side, epochs in schedule():
        gc.collect()
        os.getppid()  # callgrind: zero the counters
        run(side, epochs)
        os.getpgrp()  # callgrind: dump the counts


if __name__ == "__main__":
    _child(sys.argv[1])
