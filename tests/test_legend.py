"""Many runs in one chart: legend names without their shared prefix (core.presentation.legend), where the legend
goes and how tall the figure gets (charts.comparison_figure), and the Compare page's choices for a large
selection (core.presentation.selection: legend_runs, default_group_by, with_study_runs, selection_summary)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from core.experiment.config import ExperimentConfig
from core.jobs.spec import STUDIES, expand, run_name
from core.presentation import legend, run_tables, selection
from core.presentation.charts import comparison_figure
from core.presentation.legend import LegendEntry, plan_legend, prefix_title, shared_prefix, short_names
from core.store import Run

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
SPEC = STUDIES["bn-act-loss"]
VARIED = list(SPEC.vary)  # batchnorm, activation, loss


def study_runs(study_id: int | None = 1, *, first_id: int = 1, seeds: int | None = None) -> list[Run]:
    """The bn-act-loss study's runs (8 variants x 3 seeds), as the store returns them, without training."""
    slots = [s for s in expand(SPEC) if seeds is None or s.seed < seeds]
    return [Run(id=first_id + i, name=run_name(SPEC, s.variant, s.seed), status="finished", config=s.cfg.to_dict(),
                created_at=T0 + timedelta(minutes=i), study_id=study_id) for i, s in enumerate(slots)]


def loose_run(run_id: int, name: str = "baseline", **config) -> Run:
    return Run(id=run_id, name=name, status="finished", config=ExperimentConfig().replace(**config).to_dict(),
               created_at=T0)


def series_for(ids: list[int], metrics: tuple[str, ...] = ("train_loss", "val_loss"), steps: int = 30) -> pd.DataFrame:
    rows = []
    for rid in ids:
        for j, key in enumerate(metrics):
            for step in range(1, steps + 1):
                rows.append({"run_id": rid, "key": key, "step": step, "epoch": (step - 1) // 10,
                             "value": 1.0 / step + 0.1 * j + 0.001 * rid, "wall_time": step * 0.1})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- the shared prefix
def test_a_studys_names_lose_the_study_name() -> None:
    names = [r.name for r in study_runs()]
    prefix, short = short_names(names)
    assert prefix == "bn-act-loss: " and prefix_title(prefix) == "bn-act-loss"
    assert short[0] == "batchnorm=false activation=relu loss=bce seed=0"
    assert len(set(short)) == len(names) == 24, "still one name per run"
    assert [prefix + s for s in short] == names


def test_the_prefix_goes_as_far_as_the_names_agree_at_a_word_boundary() -> None:
    names = ["bn-act-loss: batchnorm=true activation=elu loss=bce seed=0",
             "bn-act-loss: batchnorm=true activation=elu loss=bce seed=1",
             "bn-act-loss: batchnorm=true activation=relu loss=bce seed=0"]
    assert shared_prefix(names) == "bn-act-loss: batchnorm=true "  # not "... activation=", mid-word
    assert short_names(names)[1] == ["activation=elu loss=bce seed=0", "activation=elu loss=bce seed=1",
                                     "activation=relu loss=bce seed=0"]
    assert prefix_title(shared_prefix(names)) == "bn-act-loss: batchnorm=true"


@pytest.mark.parametrize("names", [
    ["article-example", "article-fixed"],  # shared "article-" ends mid-word
    ["mlp-bn-logits", "mlp-bn-logits seed 1"],  # the whole first name: nothing would be left of it
    ["alpha run", "beta run"],
    ["only one: run"],
    [],
    ["same name", "same name"],  # nothing left to tell them apart: the '#id' does that
    [f"run {i}" for i in range(1000)],  # a bare number left: "#8 7" would read as two ids
])
def test_names_without_a_usable_prefix_are_unchanged(names: list[str]) -> None:
    prefix, short = short_names(names)
    assert prefix == "" and short == names


def test_distinct_names_stay_distinct() -> None:
    names = ["sweep: lr=0.1", "sweep: lr=0.01", "sweep: lr=0.1 wd=1"]
    prefix, short = short_names(names)
    assert prefix == "sweep: " and short == ["lr=0.1", "lr=0.01", "lr=0.1 wd=1"]
    assert shared_prefix(["a b c", "a b c d"]) == "a b ", "a name equal to the cut keeps a word"


def test_a_title_made_of_a_prefix_ends_without_its_punctuation() -> None:
    names = ["lr x batchnorm on gaussian, 10 seeds (3a7a): lr=0.1",
             "lr x batchnorm on gaussian, 5 seeds (9f0e): lr=0.1"]
    assert shared_prefix(names) == "lr x batchnorm on gaussian, "
    assert prefix_title(shared_prefix(names)) == "lr x batchnorm on gaussian"


def test_legend_runs_keeps_the_id_and_returns_the_prefix() -> None:
    runs = study_runs()[:3]
    frame, prefix = selection.legend_runs(runs)
    assert prefix == "bn-act-loss: batchnorm=false "  # they differ in activation and loss
    assert list(frame["name"]) == ["#1 activation=relu loss=bce seed=0",
                                   "#2 activation=relu loss=bce_with_logits seed=0",
                                   "#3 activation=elu loss=bce seed=0"]
    assert list(frame.index) == [1, 2, 3] and frame.drop(columns="name").equals(
        run_tables.chart_runs(runs).drop(columns="name"))
    plain = [loose_run(1, "article-example"), loose_run(2, "article-fixed")]
    frame, prefix = selection.legend_runs(plain)
    assert prefix == "" and list(frame["name"]) == ["#1 article-example", "#2 article-fixed"]
    frame, prefix = selection.legend_runs(study_runs()[:1])
    assert prefix == "" and list(frame["name"]) == ["#1 " + study_runs()[0].name], "one run keeps its name"


# ---------------------------------------------------------------------- default grouping
def test_a_studys_runs_group_by_its_varied_fields() -> None:
    runs = study_runs()
    assert selection.common_study(runs) == 1
    assert selection.default_group_by(runs, VARIED) == ["batchnorm", "activation", "loss"]  # form order


def test_only_the_varied_fields_that_vary_among_the_chosen_runs() -> None:
    runs = [r for r in study_runs() if r.config["batchnorm"]]
    assert selection.default_group_by(runs, VARIED) == ["activation", "loss"]


def test_no_default_grouping_without_seeds_to_average_or_without_a_study() -> None:
    assert selection.default_group_by(study_runs(seeds=1), VARIED) == [], "one run per variant: nothing to average"
    seeds_of_one_variant = [r for r in study_runs() if r.name.startswith("bn-act-loss: batchnorm=true "
                                                                         "activation=elu loss=bce ")]
    assert len(seeds_of_one_variant) == 3 and selection.default_group_by(seeds_of_one_variant, VARIED) == []
    assert selection.default_group_by(study_runs(), []) == []
    mixed = [*study_runs(), loose_run(99)]
    assert selection.common_study(mixed) is None
    assert selection.common_study(study_runs(1)[:2] + study_runs(2, first_id=50)[:2]) is None
    assert selection.common_study([]) is None


# ---------------------------------------------------------------------- the selector
def test_adding_a_studys_runs_keeps_the_selection_and_appends_oldest_first() -> None:
    runs = [loose_run(1), *study_runs(first_id=2)]
    newest_first = list(reversed(runs))
    assert selection.with_study_runs([1, 5], newest_first, 1) == [1, 5, 2, 3, 4, *range(6, 26)]
    assert selection.with_study_runs([], newest_first, 7) == []


def test_study_options_and_the_summary_line() -> None:
    runs = [loose_run(1), *study_runs(first_id=2)]
    names = {2: "empty study", 1: "bn-act-loss"}
    assert selection.study_options(runs, names) == {1: "bn-act-loss · 24 runs"}
    assert selection.selection_summary(study_runs(), names) == "24 runs · study bn-act-loss"
    assert selection.selection_summary(runs, names) == "25 runs · 24 of study bn-act-loss, 1 outside a study"
    live = [replace(r, status="running") for r in study_runs()[:2]] + study_runs(first_id=3)[:8]
    assert selection.selection_summary(live, names) == "10 runs · study bn-act-loss · 2 running"
    assert selection.selection_summary([loose_run(i) for i in range(9)], {}) == "9 runs"


# ---------------------------------------------------------------------- placement
def test_a_short_legend_stays_on_the_right() -> None:
    plan = plan_legend([LegendEntry(f"run:{i}", None, f"#{i} run") for i in range(8)])
    assert plan == legend.LegendPlan(show=True, below=False, height_px=0)


def test_a_long_legend_goes_below_in_rows_and_adds_its_height() -> None:
    entries = [LegendEntry(f"run:{i}", None, f"#{i} " + "x" * 50) for i in range(24)]
    plan = plan_legend(entries)
    assert plan.below and plan.layout["orientation"] == "h" and plan.layout["yref"] == "container"
    assert plan.layout["traceorder"] == "normal", "no group titles: a grid of equal columns"
    per_row = legend.PLOT_WIDTH_PX // (legend.TEXT_GAP_PX + legend.CHAR_PX * 54 + legend.ITEM_GAP_PX)
    assert per_row == 2 and plan.height_px == 12 * legend.ITEM_HEIGHT_PX + 2 * legend.PADDING_PX
    assert plan_legend(entries[:2] + [LegendEntry("x", None, "y" * 49)]).below, "one entry too long for the side"
    assert plan_legend(entries * 10).height_px == legend.MAX_BELOW_HEIGHT, "beyond it the legend scrolls"
    assert plan_legend(entries, show=False) == legend.LegendPlan(show=False, below=False, height_px=0)


def test_grouped_entries_stack_under_their_titles() -> None:
    entries = [LegendEntry(f"style:{g}", g, f"#{g}{i} run") for g in ("a", "b") for i in range(6)]
    plan = plan_legend(entries)
    assert plan.below and "traceorder" not in plan.layout  # Plotly's default: grouped, with the titles
    assert plan.height_px == 7 * legend.ITEM_HEIGHT_PX + 2 * legend.PADDING_PX, "two blocks side by side"


# ---------------------------------------------------------------------- the figure
def test_few_runs_keep_the_figure_as_it_was() -> None:
    frame = run_tables.chart_runs([loose_run(1, "article-example"), loose_run(2, "article-fixed")])
    fig = comparison_figure(series_for([1, 2]), frame, metrics=["train_loss", "val_loss"])
    assert fig.layout.height == 480 and fig.layout.legend.orientation is None and fig.layout.showlegend is True


def test_a_studys_24_runs_get_a_legend_below_and_a_tall_plot() -> None:
    runs = study_runs()
    frame, prefix = selection.legend_runs(runs)
    series = series_for([r.id for r in runs])
    fig = comparison_figure(series, frame, metrics=["train_loss", "val_loss"], title=prefix_title(prefix))
    shown = [t for t in fig.data if t.showlegend]
    assert len(shown) == 48 and not any("bn-act-loss" in t.name for t in fig.data)
    assert shown[0].name == "#1 batchnorm=false activation=relu loss=bce seed=0 · train_loss"
    assert "%{fullData.name}" in shown[0].hovertemplate, "hover shows the short name too"
    assert {t.meta["run_id"] for t in fig.data} == set(range(1, 25)), "meta unchanged"
    assert fig.layout.title.text == "bn-act-loss"
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"
    assert fig.layout.height == legend.MANY_MIN_HEIGHT + legend.MAX_BELOW_HEIGHT

    hidden = comparison_figure(series, frame, metrics=["train_loss", "val_loss"], show_legend=False)
    assert hidden.layout.showlegend is False and hidden.layout.height == legend.MANY_MIN_HEIGHT
    assert hidden.layout.legend.orientation is None


def test_grouped_by_variant_there_is_one_mean_line_per_variant_and_metric() -> None:
    runs = study_runs()
    frame, _ = selection.legend_runs(runs)
    fig = comparison_figure(series_for([r.id for r in runs]), frame, metrics=["train_loss", "val_loss"],
                            group_by=selection.default_group_by(runs, VARIED))
    means = [t for t in fig.data if t.meta["kind"] == "mean"]
    assert len(means) == 16 and all(len(t.meta["run_ids"]) == 3 for t in means)
    assert len({t.meta["group"] for t in means}) == 8
    assert fig.layout.legend.orientation == "h" and fig.layout.height >= legend.MANY_MIN_HEIGHT
    one_metric = comparison_figure(series_for([r.id for r in runs]), frame, metrics=["train_loss"],
                                   group_by=["batchnorm", "activation", "loss"])
    assert sum(bool(t.showlegend) for t in one_metric.data) == 8
    assert one_metric.layout.height >= legend.MANY_MIN_HEIGHT, "24 runs: a tall plot even with 8 entries"


def test_colour_groups_keep_their_titles_below_the_plot() -> None:
    runs = study_runs()
    frame, _ = selection.legend_runs(runs)
    fig = comparison_figure(series_for([r.id for r in runs]), frame, metrics=["train_loss"],
                            color_by="activation", layout="metric")
    assert {t.legendgrouptitle.text for t in fig.data} == {"activation=elu", "activation=relu"}
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.traceorder is None
    assert fig.layout.height > legend.MANY_MIN_HEIGHT


def test_show_legend_must_be_a_flag() -> None:
    frame = run_tables.chart_runs([loose_run(1)])
    with pytest.raises(ValueError, match="show_legend"):
        comparison_figure(series_for([1]), frame, metrics=["train_loss"], show_legend="no")
    assert np.isfinite(comparison_figure(series_for([1]), frame, metrics=["train_loss"]).layout.height)
