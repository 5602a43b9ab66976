"""How often the diagnosis is right: train the catalogue of seeded failures (core/experiment/catalogue.py), read
each run's findings, and prove each proposed fix with the counterfactual study. Writes its table to
benchmarks/RESULTS.md (its own section) and prints it.

    python benchmarks/diagnosis.py               # everything: ~300 small runs, a few minutes on 2 cores
    python benchmarks/diagnosis.py --seeds 2     # fewer seeds per side of each fix
    python benchmarks/diagnosis.py --only lr-low-sgd --only ok-mlp-bce --no-write
    python benchmarks/diagnosis.py --data-seed 1 --seeds 0   # detection on data drawn afresh, no fix proofs

Measured:
- detection: the top finding of severity problem or warning names the entry's known cause;
- false problems: findings of severity problem on the healthy configs (warnings are counted apart);
- fixes confirmed: as `python -m core fix` does (core.jobs.counterfactual), the entry's config and the fix its
  findings propose are trained over seeds 0..N-1 (in memory here, not stored, and with diagnostics="loss": only
  the final loss counts) and judged by
  `counterfactual.judge`: "helped" when the 95% CI of the exact validation loss's log ratio is below 1, or when
  every seed diverged as run and finished with the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import re
import sys
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.analysis.effects import change_text  # noqa: E402
from core.analysis.findings import findings_for  # noqa: E402
from core.experiment.catalogue import CATALOGUE, Entry  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Diagnosis: the catalogue of seeded failures"

def _train(cfg):
    from core.experiment.data import load_dataset  # noqa: PLC0415
    from core.training.reporting import MemoryReporter  # noqa: PLC0415
    from core.training.trainer import train  # noqa: PLC0415

    return train(cfg, MemoryReporter(), data=load_dataset(cfg))


def diagnose(job: tuple[Entry, int]) -> dict:
    """Train one entry, read its findings and, for a failure, prove the proposed fix: the same runs and the same
    verdict as `python -m core fix` (core.jobs.counterfactual), trained in memory rather than stored."""
    from core.jobs.counterfactual import final_loss, judge  # noqa: PLC0415

    entry, seeds = job
    start, cpu = time.perf_counter(), time.process_time()
    row = {"name": entry.name, "cause": entry.cause, "status": "", "top_cause": "", "top_title": "",
           "problems": [], "warnings": [], "fix": None, "verdict": "", "sentence": "", "error": ""}
    try:
        cfg = entry.config
        result = _train(cfg)
        found = findings_for(cfg.to_dict(), result.summary, status=result.status, error=result.error)
        top = next((f for f in found if f.severity in ("problem", "warning")), None)
        row.update(status=result.status, top_cause=top.cause if top else "", top_title=top.title if top else "",
                   problems=[f.cause or f.title for f in found if f.severity == "problem"],
                   warnings=[f.cause or f.title for f in found if f.severity == "warning"])
        proposed = next((f for f in found if f.fix), None)  # as core.jobs.fixes.proposed_fix
        if entry.cause and proposed is None:
            row["verdict"] = "no fix proposed"
        elif entry.cause and seeds >= 2:
            row["fix"] = dict(proposed.fix)
            # the proof's runs only need their final loss: per-step diagnostics off (they never change the
            # training itself, tests/test_training.py::test_diagnostics_do_not_change_training)
            quick = cfg.replace(diagnostics="loss")
            fixed_cfg = quick.replace(**proposed.fix)
            baseline, fixed = [], []
            for seed in range(seeds):
                same = result if seed == cfg.seed else _train(quick.replace(seed=seed))  # seed 0 was just trained
                baseline.append(final_loss(same.status, same.summary))
                done = _train(fixed_cfg.replace(seed=seed))
                fixed.append(final_loss(done.status, done.summary))
            verdict = judge(0, proposed.cause, row["fix"], baseline, fixed)
            row.update(verdict=verdict.verdict, sentence=verdict.sentence, ratio=verdict.ratio)
    except Exception as exc:  # noqa: BLE001 - one broken entry is a row of the table, not the end of the run
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"], row["cpu"] = time.perf_counter() - start, time.process_time() - cpu
    return row


def run_catalogue(entries: list[Entry], *, seeds: int, workers: int) -> tuple[list[dict], float]:
    start = time.perf_counter()
    # the slowest first (a failure trains 2 x seeds more runs), so that the pool ends together
    jobs = sorted(((e, seeds) for e in entries), key=lambda j: (not j[0].cause, -j[0].config.epochs))
    if workers <= 1:
        rows = [diagnose(j) for j in jobs]
    else:
        with Pool(workers) as pool:
            rows = list(pool.imap_unordered(diagnose, jobs))
    order = {e.name: i for i, e in enumerate(entries)}
    return sorted(rows, key=lambda r: order[r["name"]]), time.perf_counter() - start


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def _fix_text(fix: dict | None) -> str:
    if not fix:
        return "–"
    return change_text(fix)


def table(rows: list[dict], *, seconds: float, seeds: int, workers: int) -> str:
    failures = [r for r in rows if r["cause"]]
    healthy = [r for r in rows if not r["cause"]]
    detected = sum(r["top_cause"] == r["cause"] for r in failures)
    confirmed = sum(r["verdict"] == "helped" for r in failures)
    false_problems = sum(bool(r["problems"]) for r in healthy)
    false_warnings = sum(bool(r["warnings"]) for r in healthy)
    pct = (lambda a, b: f"{100 * a / b:.0f}%" if b else "–")
    lines = [
        SECTION, "",
        f"`python benchmarks/diagnosis.py` ({seeds} seeds per side of each fix, {workers} worker processes) on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}: "
        f"{len(failures)} seeded failures and {len(healthy)} healthy configs from core/experiment/catalogue.py, "
        f"trained in {seconds:.0f} s (load average {_load()} when it ended: the machine is shared).", "",
        "| measure | result | target | met |", "|---|---|---|---|",
        f"| detection: the top problem or warning names the known cause | {detected}/{len(failures)} "
        f"({pct(detected, len(failures))}) | ≥ 95% | "
        f"{'yes' if failures and detected / len(failures) >= 0.95 else 'no'} |",
        f"| false problems on healthy configs | {false_problems}/{len(healthy)} | 0 | "
        f"{'yes' if false_problems == 0 else 'no'} |",
        f"| healthy configs with a warning (not a target) | {false_warnings}/{len(healthy)} | – | – |",
        f"| fixes confirmed by the counterfactual study | {confirmed}/{len(failures)} "
        f"({pct(confirmed, len(failures))}) | ≥ 90% | "
        f"{'yes' if failures and confirmed / len(failures) >= 0.9 else 'no'} |",
        f"| wall time of the whole benchmark | {seconds:.0f} s | < 600 s | {'yes' if seconds < 600 else 'no'} |",
        f"| CPU time of the training processes, all together | {sum(r['cpu'] for r in rows):.0f} s | – | – |", "",
        "| entry | known cause | top finding's cause | detected | fix proposed | verdict | fixed / as run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in failures:
        ratio = r.get("ratio")
        ratio_text = f"{ratio:.3g}" if isinstance(ratio, float) and math.isfinite(ratio) else "–"
        lines.append(f"| {r['name']} | {r['cause']} | {r['top_cause'] or '(none)'} | "
                     f"{'yes' if r['top_cause'] == r['cause'] else 'no'} | {_fix_text(r['fix'])} | "
                     f"{r['verdict'] or '–'} | {ratio_text} |")
    lines += ["", "| healthy config | problems | warnings |", "|---|---|---|"]
    for r in healthy:
        lines.append(f"| {r['name']} | {', '.join(r['problems']) or '–'} | {', '.join(r['warnings']) or '–'} |")
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    """Put `text` in RESULTS.md as this benchmark's section, replacing its previous one and nothing else."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per side of each fix (0 or 1: no fix proofs)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", action="append", metavar="NAME", help="catalogue entries to run (repeatable)")
    parser.add_argument("--data-seed", type=int, default=None, metavar="N",
                        help="draw every entry's data with this data_seed instead of its own: data the thresholds "
                             "were not set on (the table is then printed, not written)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    entries = [e for e in CATALOGUE if not args.only or e.name in args.only]
    if args.data_seed is not None:
        entries = [dataclasses.replace(e, config=e.config.replace(data_seed=args.data_seed)) for e in entries]
    rows, seconds = run_catalogue(entries, seeds=args.seeds, workers=args.workers)
    text = table(rows, seconds=seconds, seeds=args.seeds, workers=args.workers)
    print(text)
    for r in rows:
        if r["error"]:
            print(f"# {r['name']}: {r['error']}", file=sys.stderr)
        if r["cause"] and (r["top_cause"] != r["cause"] or r["verdict"] != "helped"):
            print(f"# {r['name']}: top finding {r['top_title']!r}; {r['sentence'] or r['verdict']}", file=sys.stderr)
    if not args.no_write and not args.only and args.data_seed is None:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
