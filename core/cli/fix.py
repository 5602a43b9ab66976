"""`python -m core fix RUN_ID [--seeds N]`: prove a finding's fix with a small counterfactual study."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from core.cli.output import dump_json


def add_fix_parser(subparsers: Any) -> None:
    f = subparsers.add_parser(
        "fix", help="train a run's config and the config its top finding proposes over seeds, and say if it helped",
        description="Takes the first finding of the run that proposes a fix (see `show`), trains the run's config "
                    "and the fixed one over seeds 0..N-1 (stored as runs tagged fix:RUN_ID), and reports the "
                    "difference in exact validation loss (final_val_loss_logits) with a 95% confidence interval.")
    f.add_argument("id", type=int)
    f.add_argument("--seeds", default="3", metavar="N", help="seeds per side, 2 to 20 (default 3)")
    f.add_argument("--json", action="store_true", help="print one JSON object: fix, values per seed, CI, verdict")


def cmd_fix(args: argparse.Namespace, store: Any, out: TextIO, err: TextIO) -> int:
    from core.jobs.counterfactual import check_seeds, prove_fix  # noqa: PLC0415 - torch loads only for this command
    from core.analysis.effects import change_text  # noqa: PLC0415
    from core.jobs.fixes import proposed_fix  # noqa: PLC0415

    seeds = int(args.seeds) if args.seeds.isascii() and args.seeds.isdigit() else args.seeds
    check_seeds(seeds)  # said before anything else is printed
    cause, fix = proposed_fix(store, args.id)
    err.write(f"run {args.id}: {cause}; trying {change_text(fix)} over {seeds} seeds\n")

    def line(side: str, seed: int, value: float, kept: bool) -> None:
        err.write(f"  {side:<8} seed={seed}: exact val loss {value:.4g}" + (" (an earlier proof's run)" if kept
                                                                              else "") + "\n")
        err.flush()

    verdict = prove_fix(store, args.id, seeds=seeds, on_run=line)
    if args.json:
        dump_json(verdict.to_dict(), out)
    else:
        out.write(verdict.sentence + "\n")
    return 0
