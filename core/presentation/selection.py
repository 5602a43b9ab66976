"""Compare with many runs (a study's, say): legend names without the prefix they share, the study they all
belong to, the default grouping by the study's varied fields, adding a study's runs to a selection, and the
selection's one-line summary. Pure functions of store records (`core.store.Run`), as `run_tables`."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from core.presentation.formatting import format_value
from core.presentation.legend import short_names
from core.presentation.run_tables import chart_runs, varying_fields
from core.store import Run


def legend_runs(runs: Sequence[Run]) -> tuple[pd.DataFrame, str]:
    """`chart_runs` with legend names that leave out what every run's name starts with, and that prefix.

    A study's 24 runs all start "bn-act-loss: "; the legend then reads '#12 batchnorm=true activation=elu
    loss=bce seed=2' and the caller shows 'bn-act-loss' once (the chart's title). The '#id' stays, so names
    stay unique; one run, or names without a shared prefix (cut only at ': ' or ' ', see
    `core.presentation.legend.shared_prefix`), keep `chart_runs`'s names and the prefix is ''."""
    frame = chart_runs(runs)
    prefix, short = short_names([run.name for run in runs])
    if prefix:
        frame["name"] = [f"#{run.id} {name}" for run, name in zip(runs, short)]
    return frame, prefix


def common_study(runs: Sequence[Run]) -> int | None:
    """The study every one of `runs` belongs to; None when one of them belongs to none or they differ."""
    ids = {run.study_id for run in runs}
    return ids.pop() if len(ids) == 1 and None not in ids else None


def study_fields(store: Any, runs: Sequence[Run]) -> list[str]:
    """The varied fields of the study every one of `runs` belongs to; none for a mixed selection (or a study whose
    stored spec cannot be read: grouping is only a default)."""
    from core.jobs.studies import load_spec  # noqa: PLC0415

    study_id = common_study(runs)
    if study_id is None:
        return []
    try:
        return list(load_spec(store, study_id).vary)
    except (KeyError, ValueError):
        return []


# More legend entries than this and the legend is off until asked for: in Chromium a chart of 1,000 runs with its
# legend took 22 s to show, 11 s without it (the curves keep their names on hover)
LEGEND_RUNS = 100


def legend_default(n_runs: int, grouped: bool) -> bool:
    """Whether Compare starts with the legend on: yes for a grouped chart (an entry per group) or up to
    LEGEND_RUNS runs."""
    return grouped or n_runs <= LEGEND_RUNS


def default_group_by(runs: Sequence[Run], varied: Iterable[str]) -> list[str]:
    """What Compare groups `runs` by before the user chooses: the study's varied fields (`varied`, a
    `StudySpec.vary`'s keys) that take more than one value among `runs`, in form order, so a study's runs become
    one mean line with a band per variant (its seeds). Nothing when no field qualifies, or when every group would
    hold a single run (one seed per variant: a band over one run says nothing)."""
    wanted = set(varied)
    fields = [f for f in varying_fields(runs) if f in wanted and f != "seed"]
    if not fields:
        return []
    sizes = Counter(tuple(format_value(run.config.get(f)) for f in fields) for run in runs)
    return fields if max(sizes.values()) > 1 else []


def with_study_runs(selected: Sequence[int], runs: Sequence[Run], study_id: int) -> list[int]:
    """`selected` (run ids, in order) followed by the runs of study `study_id` among `runs` that are not in it
    yet, oldest first (the order the study trained them in)."""
    chosen = list(dict.fromkeys(selected))
    have = set(chosen)
    return chosen + sorted(run.id for run in runs if run.study_id == study_id and run.id not in have)


def study_options(runs: Sequence[Run], studies: Mapping[int, str]) -> dict[int, str]:
    """Study id -> '<name> · 24 runs' for the studies (`studies`: id -> name) that have runs among `runs`,
    newest study first (as `Store.list_studies` gives them)."""
    counts = Counter(run.study_id for run in runs if run.study_id is not None)
    return {sid: f"{name} · {counts[sid]} run{'s' if counts[sid] != 1 else ''}" for sid, name in studies.items()
            if counts[sid]}


def selection_summary(runs: Sequence[Run], studies: Mapping[int, str]) -> str:
    """One line for a large selection: '24 runs · study bn-act-loss', '26 runs · 24 of study bn-act-loss,
    2 outside a study', with '· 3 running' when some still train. `studies`: id -> name."""
    counts = Counter(run.study_id for run in runs)
    outside = counts.pop(None, 0)
    noun = "run" if len(runs) == 1 else "runs"
    parts = [f"{len(runs)} {noun}"]
    if len(counts) == 1 and not outside:
        (sid,) = counts
        parts.append(f"study {studies.get(sid, f'#{sid}')}")
    elif counts:
        pieces = [f"{n} of study {studies.get(sid, f'#{sid}')}" for sid, n in counts.items()]
        if outside:
            pieces.append(f"{outside} outside a study")
        parts.append(", ".join(pieces))
    running = sum(run.status == "running" for run in runs)
    if running:
        parts.append(f"{running} running")
    return " · ".join(parts)
