"""Which configs can train together as one population (`core.training.population`), decided without torch: the
study scheduler groups its cells with this before any worker imports torch."""

from __future__ import annotations

import csv
import math
from typing import Any

from core.experiment.config import ExperimentConfig

# Config fields in which the members of one population may differ.
BATCHABLE = ("seed", "lr", "weight_decay", "activation", "loss", "batchnorm", "clamp_eps", "pos_weight", "bn_eps",
             "bn_momentum", "elu_alpha", "hidden_bias_init", "momentum", "grad_clip", "output_relu",
             "optimizer", "epochs")
MIN_POPULATION = 4  # a group is split across workers only into populations at least this big
MAX_POPULATION = 1024  # members of one population at most (memory) ...
POPULATION_BYTES = 2**30  # ... and fewer where their parameter-sized rows would take more than this
# Rows of a member's parameters that a population keeps at most: values, gradients and their copy before clipping,
# Adam's two moments (or SGD's momentum), the values before a step, and the update statistics' five.
ROW_COPIES = 12
_KNOWN_SIZES = {"breast_cancer": 569}  # samples of the data sets whose size is not a config field
_KNOWN_FEATURES = {"breast_cancer": 30}  # features of the data sets whose width is not a config field
_ITEM_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


def group_key(cfg: ExperimentConfig) -> tuple[tuple[str, Any], ...]:
    """The config's fields that the members of one population share: configs with equal keys train together.
    Every field but `BATCHABLE` is shared, so a field added to the config later is shared until it is batched.
    BatchNorm on or off is batched unless it changes the epoch's batches (a trailing batch of one sample is
    dropped with BatchNorm; a CSV's size is unknown here)."""
    fixed = {k: v for k, v in cfg.to_dict().items() if k not in BATCHABLE}
    n = cfg.n_samples if cfg.dataset not in ("csv", *_KNOWN_SIZES) else _KNOWN_SIZES.get(cfg.dataset)
    n_train = None if n is None else n - int(round(n * cfg.val_fraction))
    if cfg.hidden and (n_train is None or (n_train > cfg.batch_size and n_train % cfg.batch_size == 1)):
        fixed["batchnorm"] = cfg.batchnorm
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(fixed.items()))


def parameters(cfg: ExperimentConfig) -> int:
    """A member's parameters (its BatchNorm's counted: a population keeps their slots if any member has them), from
    the config alone: a CSV's width from its header row (the config's `n_features` if it cannot be read)."""
    features = _KNOWN_FEATURES.get(cfg.dataset, cfg.n_features)
    if cfg.dataset == "csv":
        try:
            with open(cfg.csv_path, encoding="utf-8", errors="replace", newline="") as f:
                features = max(1, len(next(csv.reader(f), [])) - 1)  # a quoted name may hold a comma
        except (OSError, csv.Error):
            pass
    widths = [features, *cfg.hidden, 1]
    return sum(a * b + b for a, b in zip(widths, widths[1:])) + 2 * sum(cfg.hidden)


def population_limit(cfg: ExperimentConfig) -> int:
    """Members of one population at most for configs like `cfg` (that share its `group_key`): MAX_POPULATION, or
    as many as keep ROW_COPIES rows of their parameters within POPULATION_BYTES (at least one)."""
    member = ROW_COPIES * parameters(cfg) * _ITEM_BYTES.get(cfg.dtype, 8)
    return max(1, min(MAX_POPULATION, POPULATION_BYTES // member))


def populations(cfgs: list[ExperimentConfig], *, max_size: int = MAX_POPULATION) -> list[list[int]]:
    """The positions of `cfgs` grouped by `group_key`, in first-seen order, at most `max_size` a group (and at most
    `population_limit` of its configs)."""
    groups: dict[tuple, list[list[int]]] = {}
    limits: dict[tuple, int] = {}
    for i, cfg in enumerate(cfgs):
        key = group_key(cfg)
        chunks = groups.setdefault(key, [[]])
        if key not in limits:
            limits[key] = min(max_size, population_limit(cfg))
        if len(chunks[-1]) >= limits[key]:
            chunks.append([])
        chunks[-1].append(i)
    return [chunk for chunks in groups.values() for chunk in chunks]


def tasks(cfgs: list[ExperimentConfig], workers: int, *, max_size: int = MAX_POPULATION) -> list[list[int]]:
    """The positions of `cfgs` as a study's local scheduler trains them: each group of `populations` split into up
    to `workers` contiguous populations of at least MIN_POPULATION members (fewer if the group is small), every
    other config alone; in the order of each task's first position."""
    parts_of: list[list[int]] = []
    for group in populations(cfgs, max_size=max_size):
        parts = max(1, min(workers, len(group) // MIN_POPULATION))
        size = math.ceil(len(group) / parts)
        parts_of += [group[at:at + size] for at in range(0, len(group), size)]
    return sorted(parts_of)
