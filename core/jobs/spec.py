"""A study's grid: a base config, the fields to vary with their values, and a number of seeds.

A `StudySpec` coerces every value and validates every combination when it is built, so a bad grid is reported,
naming the field, before anything runs. `expand` lists its (variant, seed, config) slots; `run_key` tells which
slot a stored run's config belongs to. `STUDIES` holds the built-in studies; `parse_vary` and `auto_name` read
and name a grid as the command line and the Studies page give it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from core.analysis.effects import format_value, variant_label
from core.experiment.config import ConfigError, ExperimentConfig, coerce, field_names, inert_fields
from core.store.sqlstore import text_problem


DEFAULT_SEEDS = 3


MAX_SEEDS = 100
MAX_WORKERS = 256  # worker processes a study may start at once


MAX_RUNS = 10_000


@dataclass(frozen=True)
class StudySpec:
    name: str  # unique in the store; running a study of a stored name resumes it
    base: dict[str, Any]  # the base config, complete (ExperimentConfig.to_dict()); `seed` is replaced per run
    vary: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # field -> values; the first is the baseline
    seeds: int = DEFAULT_SEEDS  # seeds 0..seeds-1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("name", "a study needs a non-empty name")
        if problem := text_problem(self.name):
            raise ConfigError("name", problem)
        try:
            seeds = coerce("seed", self.seeds)
        except ConfigError:
            raise ConfigError("seeds", f"must be a whole number from 1 to {MAX_SEEDS}, got {self.seeds!r}") from None
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError("seeds", f"must be a whole number from 1 to {MAX_SEEDS}, got {self.seeds!r}")
        base = ExperimentConfig.from_dict(self.base)
        vary: dict[str, tuple[Any, ...]] = {}
        for name, values in dict(self.vary).items():
            if name == "seed":
                raise ConfigError("seed", "is set by the study (seeds 0..N-1); give the number of seeds instead")
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise ConfigError(name, f"the values to vary must be a list, got {values!r}")
            coerced = tuple(coerce(name, v) for v in values)
            if not coerced:
                raise ConfigError(name, "needs at least one value to vary over")
            for i, v in enumerate(coerced):
                if v in coerced[:i]:
                    raise ConfigError(name, f"the value {format_value(v)} is given twice")
            vary[name] = coerced
        n_variants = math.prod(len(v) for v in vary.values())
        if n_variants * seeds > MAX_RUNS:
            raise ConfigError("vary", f"{n_variants} variants x {seeds} seeds is {n_variants * seeds} runs; "
                                      f"at most {MAX_RUNS} are allowed")
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "base", base.to_dict())
        object.__setattr__(self, "vary", vary)
        object.__setattr__(self, "seeds", seeds)
        for variant in self.variants():  # every combination, validated before anything runs
            try:
                base.replace(**variant, seed=seeds - 1)
            except ConfigError as exc:
                reason = str(exc).split(": ", 1)[-1]
                raise ConfigError(exc.field, f"{reason} (in the variant {variant_label(variant)})") from None

    def check_varied_fields(self) -> None:
        """ConfigError on a varied field that changes nothing in any variant (batchnorm without hidden layers,
        momentum under Adam): its variants would be one model trained again under several labels, and its
        effect a difference of exactly 0. Checked when a study is made, not when a stored one is read."""
        base = ExperimentConfig.from_dict(self.base)
        for name in self.vary:
            reasons = [inert_fields(base.replace(**variant)).get(name) for variant in self.variants()]
            if all(reasons):
                raise ConfigError(name, f"varying it changes nothing here: it {reasons[0]}")

    def variants(self) -> list[dict[str, Any]]:
        """Every combination of the varied values, the last field changing fastest."""
        return [dict(zip(self.vary, combo)) for combo in itertools.product(*self.vary.values())]

    @property
    def size(self) -> int:
        """Runs in the study: variants x seeds."""
        return math.prod(len(v) for v in self.vary.values()) * self.seeds

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": dict(self.base), "vary": {k: [_jsonable(v) for v in vs]
                                                                   for k, vs in self.vary.items()},
                "seeds": self.seeds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        unknown = sorted(set(data) - {"name", "base", "vary", "seeds"})
        if unknown:
            raise ConfigError(unknown[0], "unknown study field; allowed: name, base, vary, seeds")
        return cls(name=data.get("name", ""), base=dict(data.get("base") or {}), vary=dict(data.get("vary") or {}),
                   seeds=data.get("seeds", DEFAULT_SEEDS))


class Slot(NamedTuple):
    """One run of a study: the varied values, the seed, and the full config."""

    variant: dict[str, Any]
    seed: int
    cfg: ExperimentConfig


def expand(spec: StudySpec) -> list[Slot]:
    """Every (variant, seed, config) of the study, seed-major: all variants of seed 0, then of seed 1, ..."""
    base = ExperimentConfig.from_dict(spec.base)
    variants = spec.variants()
    return [Slot(variant, seed, base.replace(**variant, seed=seed)) for seed in range(spec.seeds)
            for variant in variants]


def slot_key(variant: Mapping[str, Any], seed: int) -> tuple[tuple[Any, ...], int]:
    return tuple(variant.values()), seed


def run_key(spec: StudySpec, config: Mapping[str, Any]) -> tuple[tuple[Any, ...], int] | None:
    """The (variant values, seed) a stored run config belongs to, or None if it is not one of this grid's."""
    try:
        key = tuple(coerce(name, config[name]) for name in spec.vary), coerce("seed", config["seed"])
    except (KeyError, ConfigError):
        return None
    return key if key[1] < spec.seeds and all(v in spec.vary[n] for n, v in zip(spec.vary, key[0])) else None


def run_name(spec: StudySpec, variant: Mapping[str, Any], seed: int) -> str:
    return f"{spec.name}: {variant_label(variant)} seed={seed}"[:255]


def _named(name: str, base: ExperimentConfig, vary: dict[str, tuple], seeds: int = 3) -> StudySpec:
    return StudySpec(name=name, base=base.to_dict(), vary=vary, seeds=seeds)


# The canonical grid, its setting chosen by experiment: the breast-cancer data *not* standardised (raw features
# up to ~4000), a 2x64 MLP, Adam at lr 0.05, 20 epochs (1-3 s a run on a CPU core). Without BatchNorm the
# hidden activations are in the hundreds, so the logits saturate: sigmoid + BCELoss then predicts one class for
# every sample, each wrong one costs the clamped 100 with zero gradient, and it never moves (val loss 33 or 67,
# by which class the seed's initial weights favour); BCEWithLogitsLoss keeps a gradient of +-1 and learns (val
# loss ~0.2-0.35). BatchNorm rescales the hidden layer and both losses learn (~0.13-0.21). ReLU vs ELU: no clear
# difference. So BatchNorm and the loss each matter, and only through the (no BatchNorm, bce) corner.
STUDIES: dict[str, StudySpec] = {
    "bn-act-loss": _named(
        "bn-act-loss",
        ExperimentConfig(dataset="breast_cancer", standardize=False, hidden=(64, 64), optimizer="adam", lr=0.05,
                         batch_size=32, epochs=20),
        {"batchnorm": (False, True), "activation": ("relu", "elu"), "loss": ("bce", "bce_with_logits")}),
}


def named_study(name: str) -> StudySpec:
    if name not in STUDIES:
        raise ConfigError("study", f"{name!r} is not a built-in study; choose one of: {', '.join(STUDIES)}")
    return STUDIES[name]


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def spec_difference(a: StudySpec, b: StudySpec) -> str:
    if a.seeds != b.seeds:
        return f"seeds {a.seeds} vs {b.seeds}"
    if dict(a.vary) != dict(b.vary):
        return f"varies {variant_label({k: list(v) for k, v in a.vary.items()})} vs " \
               f"{variant_label({k: list(v) for k, v in b.vary.items()})}"
    changed = [k for k in field_names() if a.base.get(k) != b.base.get(k)]
    return "base " + ", ".join(f"{k} {format_value(a.base.get(k))} vs {format_value(b.base.get(k))}"
                               for k in changed[:3])


def parse_vary(items: Sequence[str]) -> dict[str, list[str]]:
    """["batchnorm=false,true", "hidden=[64],[64,64]"] -> {"batchnorm": ["false", "true"], "hidden": [...]}.
    Values are split at commas outside brackets; the spec coerces them. Field names may use - for _."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError("vary", f"{item!r} must look like FIELD=V1,V2 (e.g. loss=bce,bce_with_logits)")
        if name not in field_names():
            coerce(name, None)  # raises: unknown config field, naming it
        if name in out:
            raise ConfigError(name, "is given to --vary twice; list all its values in one --vary")
        values = _split_values(text)
        if not values:
            raise ConfigError(name, "needs at least one value to vary over, e.g. --vary lr=0.01,0.1")
        out[name] = values
    return out


def auto_name(base: Mapping[str, Any], vary: Mapping[str, Any], seeds: int) -> str:
    """A name derived from the grid: the same grid always gets the same name, so the same command resumes."""
    canonical = json.dumps({"base": ExperimentConfig.from_dict(base).to_dict(),
                            "vary": {k: [_jsonable(coerce(k, v)) for v in vs] for k, vs in vary.items()},
                            "seeds": seeds}, sort_keys=True, default=str)
    digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
    fields = " x ".join(vary) or "seeds"
    return f"{fields} on {base.get('dataset')}, {seeds} seeds ({digest})"


def _split_values(text: str) -> list[str]:
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return [v for v in values if v != ""] if text.strip() else []
