"""Training cost in CPU instructions, counted by valgrind's callgrind: unlike seconds, the count does not move with
the machine's load, so a 5% budget can be checked on a shared VM. Optional (`bench.py --instructions`); slow
(valgrind runs Python about 50x slower), so every count is a difference of two runs of the same side, `LONG` and
`SHORT` epochs long: imports, set-up and the first-call costs cancel out, and what is left is the cost of the extra
epochs, for our trainer and for the bare loop alike. Two things that depend on the clock or on chance are held
still: the objects made by the imports are frozen before training (a full pass of the cyclic collector over
them costs some 300M instructions and lands in one run or the other), and the trainer flushes by step count only
(under valgrind a second is ~20 steps, not the ~3,000 it is natively).

    python benchmarks/instructions.py CASE SIDE EPOCHS   # the child valgrind runs: one training of one side
"""

from __future__ import annotations

import gc
import math
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHORT, LONG = 2, 12
SIDES = ("bare", "loss", "full")


def available() -> bool:
    return shutil.which("valgrind") is not None


def count(case: str, side: str, epochs: int) -> int:
    """Instructions of one child process (every thread) under callgrind."""
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          str(Path(__file__).resolve()), case, side, str(epochs)],
                         capture_output=True, text=True, check=True)
    found = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if not found:
        raise RuntimeError(f"callgrind printed no instruction count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def bench_instructions(cases: dict[str, str], workers: int = 2):
    """One row per case and diagnostics level: our extra epochs' instructions / the bare loop's."""
    from benchmarks.bench import Row, training_cases  # noqa: PLC0415

    jobs = [(case, side, epochs) for case in cases for side in SIDES for epochs in (SHORT, LONG)]
    with ThreadPoolExecutor(workers) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: count(*job), jobs)))
    rows = []
    budgets = {"full": 1.15, "loss": 1.05}
    for case, label in cases.items():
        cfg = training_cases(quick=False)[label]
        extra = {side: counts[case, side, LONG] - counts[case, side, SHORT] for side in SIDES}
        steps = (LONG - SHORT) * _steps_per_epoch(cfg)
        for diag, budget in budgets.items():
            ratio = extra[diag] / extra["bare"]
            rows.append(Row("training instructions (callgrind)", f"{label}, diagnostics={diag}, instructions per "
                            f"step over {steps} steps", extra[diag] / steps, extra["bare"] / steps, "instr",
                            f"<= {budget}x", ratio <= budget))
    return rows


def _steps_per_epoch(cfg) -> int:
    from core.data import load_dataset  # noqa: PLC0415
    from core.training import batch_slices  # noqa: PLC0415

    return len(batch_slices(len(load_dataset(cfg).y_train), cfg.batch_size, batchnorm=cfg.batchnorm))


def _child(case: str, side: str, epochs: int) -> None:
    import torch  # noqa: PLC0415

    from benchmarks.bench import bare_loop, training_cases  # noqa: PLC0415
    from core.data import load_dataset  # noqa: PLC0415
    from core.reporting import MemoryReporter  # noqa: PLC0415
    from core.training import train  # noqa: PLC0415

    torch.set_num_threads(1)
    gc.collect()
    gc.freeze()
    label = {"article": 0, "mlp": 1}[case]
    cfg = list(training_cases(quick=False).values())[label].replace(epochs=epochs)
    data = load_dataset(cfg)
    device = torch.device("cpu")
    if side == "bare":
        bare_loop(cfg, data, device)
    else:
        train(cfg.replace(diagnostics=side), MemoryReporter(), data=data, device=device, flush_every_s=math.inf)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
