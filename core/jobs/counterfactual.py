"""Proving a fix: a run's config and the config its top finding proposes, each trained over the same seeds, and
whether the fix helped, by how much, with a 95% confidence interval.

The runs are ordinary stored runs, tagged `fix:<run id>`, trained one after another in this process. They are
judged on the exact loss (`final_val_loss_logits`: BCEWithLogitsLoss on the same logits), so a clamped-BCE
baseline and a logits fix are compared on one yardstick. Seed by seed the two are paired. A broken run's loss is
often hundreds of times a healthy one's and varies by orders of magnitude between seeds, so the verdict is judged
on the ratio fixed / baseline, as the t interval over seeds of its logarithm: "helped" when the whole interval is
below 1, "hurt" when above, else no clear difference. The plain difference and its t interval are reported too
(and decide when a loss is not positive). Both are taken over the seeds where both sides finished; a run that
diverged or failed has no loss to pair, so it counts apart: the side where more seeds diverged or failed is the
worse one, unless the seeds where both finished clearly say the opposite.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

from core.experiment.config import ConfigError, ExperimentConfig
from core.analysis.effects import change_text, t_interval
from core.jobs.fixes import proposed_fix
from core.jobs.studies import RESULT_STATUSES
from core.store import Store, StoreReporter

METRIC = "final_val_loss_logits"  # the exact loss: one yardstick for clamped BCE and logits alike
MAX_SEEDS = 20


@dataclass(frozen=True)
class Verdict:
    run_id: int
    cause: str
    fix: dict[str, Any]
    seeds: int
    baseline: list[float]  # METRIC per seed, the run's own config
    fixed: list[float]  # METRIC per seed, with the fix
    run_ids: dict[str, list[int]]  # "baseline" / "fixed" -> the stored runs, by seed
    difference: float  # mean over seeds of fixed - baseline
    ci_low: float
    ci_high: float
    ratio: float  # geometric mean over seeds of fixed / baseline (NaN unless every loss is positive)
    ratio_low: float
    ratio_high: float
    verdict: str  # "helped", "hurt", "no clear difference" or "not judged" (no seed finished either way)

    @property
    def sentence(self) -> str:
        change = change_text(self.fix)
        pairs = list(zip(self.baseline, self.fixed))
        both = [(b, f) for b, f in pairs if math.isfinite(b) and math.isfinite(f)]
        lost_base = sum(not math.isfinite(b) for b in self.baseline)
        lost_fixed = sum(not math.isfinite(f) for f in self.fixed)
        if pairs and lost_base == len(pairs) and lost_fixed == 0:
            return (f"The fix helped: as run, every seed diverged or failed; with {change} every seed finished, at "
                    f"an exact validation loss of {_fmt(_mean(self.fixed))} on average ({self.seeds} seeds).")
        if pairs and lost_fixed == len(pairs) and lost_base == 0:
            return (f"The fix hurt: with {change} every seed diverged or failed; as run, every seed finished, at an "
                    f"exact validation loss of {_fmt(_mean(self.baseline))} on average ({self.seeds} seeds).")
        lost = (f" With the fix {lost_fixed} of {self.seeds} seeds diverged or failed; as run, {lost_base}."
                if lost_base or lost_fixed else "")
        if not both:
            return (f"{change} could not be judged: no seed finished both as run and with the fix ({self.seeds} "
                    f"seeds).{lost}")
        n = len(both)
        where = f"{n} seed{'s' if n > 1 else ''}" + (" where both finished" if n < len(pairs) else "")
        # On the ratio's scale (every loss positive) the averages are geometric means, whose ratio is the ratio
        # judged: arithmetic ones can rise while the ratio falls (one seed at 100 and 150, five at 1 and 0.1)
        geometric = math.isfinite(self.ratio) and all(b > 0 and f > 0 for b, f in both)
        average = _geomean if geometric else _mean
        means = (f"from {_fmt(average([b for b, _ in both]))} to {_fmt(average([f for _, f in both]))} on average"
                 + (" (geometric means)" if geometric else "") if n > 1 else f"from {_fmt(both[0][0])} to "
                                                                              f"{_fmt(both[0][1])}")
        near = math.isfinite(self.ratio) and NEAR[0] < self.ratio < NEAR[1]  # "1 times higher (1 to 1 times)"
        if near:
            size = f"a change of {_change(self.ratio)}"
        elif math.isfinite(self.ratio):
            size = f"{_fmt(1 / self.ratio)} times lower" if self.ratio <= 1 else f"{_fmt(self.ratio)} times higher"
        else:
            size = f"a difference of {_fmt(self.difference)}"
        if n < 2:
            ci = f"({where}: too few for an interval)"
        elif near and math.isfinite(self.ratio_low) and math.isfinite(self.ratio_high):
            ci = f"(95% CI {_change(self.ratio_low)} to {_change(self.ratio_high)}, {where})"
        elif math.isfinite(self.ratio) and math.isfinite(self.ratio_low):
            low, high = (1 / self.ratio_high, 1 / self.ratio_low) if self.ratio <= 1 else (self.ratio_low,
                                                                                          self.ratio_high)
            ci = f"(95% CI {_fmt(low)} to {_fmt(high)} times, {where})"
        else:
            ci = f"(95% CI {_fmt(self.ci_low)} to {_fmt(self.ci_high)}, {where})"
        if self.verdict == "helped":
            if lost_base > lost_fixed:
                return (f"The fix helped: as run {lost_base} of {self.seeds} seeds diverged or failed, against "
                        f"{lost_fixed} with {change}. Where both finished, the exact validation loss went {means}, "
                        f"{size} {ci}.")
            return f"The fix helped: {change} lowered the exact validation loss {means}, {size} {ci}.{lost}"
        if self.verdict == "hurt":
            if lost_fixed > lost_base:
                return (f"The fix hurt: with {change} {lost_fixed} of {self.seeds} seeds diverged or failed, "
                        f"against {lost_base} as run. Where both finished, the exact validation loss went {means}, "
                        f"{size} {ci}.")
            return f"The fix hurt: {change} raised the exact validation loss {means}, {size} {ci}.{lost}"
        return f"{change} made no clear difference to the exact validation loss ({means}, {size} {ci}).{lost}"

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "cause": self.cause, "fix": self.fix, "metric": METRIC, "seeds": self.seeds,
                "baseline": self.baseline, "fixed": self.fixed, "run_ids": self.run_ids,
                "difference": self.difference, "ci_low": self.ci_low, "ci_high": self.ci_high, "ratio": self.ratio,
                "ratio_low": self.ratio_low, "ratio_high": self.ratio_high, "verdict": self.verdict,
                "sentence": self.sentence}


def prove_fix(store: Store, run_id: int, *, seeds: int = 3, fix: dict[str, Any] | None = None,
              on_run: Callable[[str, int, float, bool], None] | None = None) -> Verdict:
    """Train the run's config and the fixed config over seeds 0..seeds-1 and judge the difference (see above).
    `fix` defaults to the run's top proposed fix. A (config, seed) an earlier proof of this run already has a
    result for (a run tagged fix:RUN_ID that finished, diverged or failed) is taken from it, not trained again, so
    proving again, or with more seeds, trains only what is new. `on_run(side, seed, value, kept)` after each.
    Bad input (an unknown run, a fix that makes an invalid config) raises before anything is trained."""
    from core.experiment.data import load_dataset  # noqa: PLC0415 - torch loads only when runs train
    from core.training.trainer import train  # noqa: PLC0415

    check_seeds(seeds)
    run = store.get_run(run_id)
    cause, change = ("given", dict(fix)) if fix else proposed_fix(store, run_id)
    base = ExperimentConfig.from_dict(run.config)
    fixed = base.replace(**change)  # validated: a fix that breaks the config is a ConfigError here
    values: dict[str, list[float]] = {"baseline": [], "fixed": []}
    ids: dict[str, list[int]] = {"baseline": [], "fixed": []}
    earlier = [r for r in store.list_runs(status=RESULT_STATUSES) if f"fix:{run_id}" in r.tags]  # kept, as a study's
    for seed in range(seeds):
        for side, cfg in (("baseline", base), ("fixed", fixed)):
            cfg = cfg.replace(seed=seed)
            kept = next((r for r in earlier if _same_config(r.config, cfg)), None)
            if kept is not None:
                value, new_id = final_loss(kept.status, kept.summary), kept.id
            else:
                label = "as run" if side == "baseline" else change_text(change)
                new_id = store.create_run(name=f"fix #{run_id}: {label} seed={seed}"[:255], config=cfg.to_dict())
                store.add_tag(new_id, f"fix:{run_id}")
                result = train(cfg, StoreReporter(store, new_id, pid=os.getpid(), host=socket.gethostname()),
                               data=load_dataset(cfg))
                value = final_loss(result.status, result.summary)
            values[side].append(value)
            ids[side].append(new_id)
            if on_run is not None:
                on_run(side, seed, value, kept is not None)
    return judge(run_id, cause, change, values["baseline"], values["fixed"], ids)


def _same_config(stored: dict[str, Any], cfg: ExperimentConfig) -> bool:
    try:
        return ExperimentConfig.from_dict(stored) == cfg
    except (ConfigError, TypeError, ValueError):  # a config this version no longer reads: not the same
        return False


def check_seeds(seeds: Any) -> int:
    """The number of seeds a proof trains, or a ConfigError on `seeds`: a whole number from 2 (a CI needs two)
    to MAX_SEEDS."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 2 <= seeds <= MAX_SEEDS:
        raise ConfigError("seeds", f"must be a whole number from 2 to {MAX_SEEDS} (a CI needs two), got {seeds!r}")
    return seeds


def final_loss(status: str, summary: dict[str, Any]) -> float:
    """METRIC of a finished run; NaN for one that diverged or failed, whatever its last finished epoch measured."""
    value = summary.get(METRIC)
    return float(value) if isinstance(value, (int, float)) and status == "finished" else math.nan


def judge(run_id: int, cause: str, change: dict[str, Any], baseline: list[float], fixed: list[float],
          ids: dict[str, list[int]] | None = None) -> Verdict:
    """The verdict on METRIC per seed as run (`baseline`) and with the fix (`fixed`), paired by seed; NaN for a
    run that diverged or failed. (`prove_fix` trains and stores the runs; the diagnosis benchmark trains them in
    memory and judges them here.)"""
    pairs = list(zip(baseline, fixed))
    mean, low, high = _t_interval([f - b for b, f in pairs])
    positive = all(b > 0 and f > 0 for b, f in pairs if math.isfinite(b) and math.isfinite(f))
    log_mean, log_low, log_high = _t_interval([math.log(f / b) for b, f in pairs
                                               if math.isfinite(b) and math.isfinite(f)]) if positive \
        else (math.nan,) * 3
    ratio, ratio_low, ratio_high = (math.exp(v) if math.isfinite(v) else math.nan for v in (log_mean, log_low,
                                                                                           log_high))
    judged_low, judged_high, zero = (log_low, log_high, 0.0) if math.isfinite(log_low) else (low, high, 0.0)
    verdict = "helped" if judged_high < zero else "hurt" if judged_low > zero else "no clear difference"
    # more seeds diverged or failed on one side than on the other: that side is worse whatever the seeds where both
    # finished say (a fix that makes runs diverge is no fix), unless those seeds say the opposite clearly
    lost_base = sum(not math.isfinite(b) for b, _ in pairs)
    lost_fixed = sum(not math.isfinite(f) for _, f in pairs)
    if lost_base > lost_fixed and verdict != "hurt":
        verdict = "helped"
    elif lost_fixed > lost_base and verdict != "helped":
        verdict = "hurt"
    if lost_base == lost_fixed and not any(math.isfinite(b) and math.isfinite(f) for b, f in pairs):
        verdict = "not judged"  # no seed finished both ways, and neither side lost more: nothing says either way
    return Verdict(run_id, cause, change, len(pairs), list(baseline), list(fixed),
                   ids or {"baseline": [], "fixed": []}, mean, low, high, ratio, ratio_low, ratio_high, verdict)


def _t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """`t_interval` of the finite differences: a seed whose baseline never produced a loss (NaN) counts as no
    evidence either way."""
    return t_interval([d for d in diffs if math.isfinite(d)])


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "NaN"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


NEAR = (0.9, 1.1)  # a ratio this near 1 reads as a percent change: "1 times higher (1 to 1 times)" says nothing


def _change(ratio: float) -> str:
    """A ratio as a signed percent change: 1.0004 -> "+0.04%", 0.97 -> "-3%"."""
    return f"{(ratio - 1) * 100:+.2g}%"
