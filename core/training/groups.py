"""Which configs can train together as one population (`core.training.population`), decided without torch: the
study scheduler groups its cells with this before any worker imports torch."""

from __future__ import annotations

import math
from typing import Any

from core.experiment.config import ExperimentConfig

# Config fields in which the members of one population may differ.
BATCHABLE = ("seed", "lr", "weight_decay", "activation", "loss", "batchnorm", "clamp_eps", "pos_weight", "bn_eps",
             "bn_momentum", "elu_alpha", "hidden_bias_init", "momentum", "grad_clip", "output_relu",
             "optimizer")
MIN_POPULATION = 4  # a group is split across workers only into populations at least this big
MAX_POPULATION = 1024  # members of one population at most (memory)
_KNOWN_SIZES = {"breast_cancer": 569}  # samples of the data sets whose size is not a config field


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


def populations(cfgs: list[ExperimentConfig], *, max_size: int = MAX_POPULATION) -> list[list[int]]:
    """The positions of `cfgs` grouped by `group_key`, in first-seen order, at most `max_size` a group."""
    groups: dict[tuple, list[list[int]]] = {}
    for i, cfg in enumerate(cfgs):
        chunks = groups.setdefault(group_key(cfg), [[]])
        if len(chunks[-1]) >= max_size:
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
