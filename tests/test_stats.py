"""The statistics that answer "is A better than B?": interaction contrasts against a hand computation on stored
values, Holm against hand examples, the seeds figures against the t distribution, the canonical study's
interaction said in words, judges, Welch's interval for two groups of runs, and the tables for papers."""

from __future__ import annotations

import argparse
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core import PROJECT_ROOT
from core.analysis.effects import choice_words, fmt, ranking
from core.analysis.groups import welch_difference
from core.analysis.interactions import interaction_sentence, interactions
from core.analysis.judges import JUDGES, curve_measures, judge
from core.analysis.multiple import holm
from core.analysis.power import detectable_difference, power, seeds_needed
from core.analysis.statistics import study_statistics
from core.cli import export as export_cli
from core.cli import main as cli
from core.experiment.config import ConfigError, ExperimentConfig
from core.jobs.spec import STUDIES, StudySpec, expand
from core.jobs.studies import open_study, study_frame, summarize
from core.presentation import tables
from core.store import Store
from core.training.reporting import MetricRow

CANONICAL = json.loads((PROJECT_ROOT / "tests" / "fixtures" / "bn-act-loss-summaries.json").read_text())["runs"]


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'stats.db'}") as s:
        yield s


def store_study(store: Store, spec: StudySpec, value) -> int:
    """The study with one finished run per slot, its summary from `value(variant, seed)` (a dict)."""
    study_id = open_study(store, spec)
    for slot in expand(spec):
        run_id = store.create_run(name=f"{slot.variant} {slot.seed}", config=slot.cfg.to_dict(), study_id=study_id)
        store.finish_run(run_id, status="finished", summary=value(slot.variant, slot.seed))
    return study_id


SMALL = ExperimentConfig(epochs=1, n_samples=200, hidden=(4,)).to_dict()


# ---------------------------------------------------------------------- interactions, by hand
def test_interaction_of_a_2x2_matches_the_numbers_put_in(store):
    """Four cells per seed built so the interaction contrast is seed + 5: 5, 6, 7 over three seeds."""
    spec = StudySpec(name="2x2", base=SMALL, vary={"batchnorm": [False, True], "loss": ["bce", "bce_with_logits"]},
                     seeds=3)

    def value(variant, seed):
        bn, logits = variant["batchnorm"], variant["loss"] == "bce_with_logits"
        return {"final_val_loss_logits": 10.0 + 2.0 * bn + 3.0 * logits + (seed + 5) * (bn and logits)}

    frame = study_frame(store, store_study(store, spec, value))
    (row,) = interactions(frame, "final_val_loss_logits").to_dict("records")
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd of 5, 6, 7 is 1
    assert row["fields"] == ["batchnorm", "loss"] and row["levels"] == [True, "bce_with_logits"]
    assert row["baselines"] == [False, "bce"]
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == pytest.approx((6.0, 6.0 - half, 6.0 + half), abs=1e-12)
    assert row["n_seeds"] == 3 and row["pairs"] == 3 and row["clear"]
    # BatchNorm's simple effects: +2 with bce; +2 + (seed + 5), i.e. 8 on average, with bce_with_logits
    assert row["effect_at_baseline"] == pytest.approx(2.0) and row["effect_at_level"] == pytest.approx(8.0)
    assert row["p_value"] == pytest.approx(stats.ttest_1samp([5.0, 6.0, 7.0], 0.0).pvalue)


def _hand_interaction(frame, metric, a, la, a0, b, lb, b0, others):
    ok = frame[frame.status == "finished"]
    per_seed = []
    for _, g in ok.groupby("seed"):
        contrasts = []
        for combo, cell in (g.groupby(others) if others else [((), g)]):
            y = {(x, z): cell[(cell[a] == x) & (cell[b] == z)][metric].mean() for x in (la, a0) for z in (lb, b0)}
            if all(np.isfinite(v) for v in y.values()):
                contrasts.append(y[la, lb] - y[a0, lb] - y[la, b0] + y[a0, b0])
        if contrasts:
            per_seed.append(np.mean(contrasts))
    d = np.array(per_seed)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    return d.mean(), low, high, len(d)


def test_interactions_of_a_3_field_grid_with_three_levels_match_a_hand_computation(store):
    """lr has three levels: each non-baseline level pairs with each non-baseline level of the other field, both
    against the baselines (treatment contrasts); the third field is averaged over, runs without a result skipped."""
    spec = StudySpec(name="3x2x2", base=SMALL, vary={"lr": [0.01, 0.1, 1.0], "batchnorm": [False, True],
                                                     "loss": ["bce", "bce_with_logits"]}, seeds=4)
    rng = np.random.default_rng(7)

    def value(variant, seed):
        lr, bn, logits = variant["lr"], variant["batchnorm"], variant["loss"] == "bce_with_logits"
        y = 1.0 + math.log10(lr) * (0.3 if bn else -0.2) + 0.5 * logits + rng.normal(0, 0.1)
        return {"final_val_loss_logits": y, "final_val_loss": y}

    study_id = store_study(store, spec, value)
    run = store.list_runs(study_id=study_id)[5]
    store.finish_run(run.id, status="diverged", summary={})  # one cell without a result: pairwise skipped
    frame = study_frame(store, study_id)
    table = interactions(frame, "final_val_loss_logits")
    assert [(tuple(r.fields), tuple(r.levels)) for r in table.itertuples()] == [
        (("lr", "batchnorm"), (0.1, True)), (("lr", "batchnorm"), (1.0, True)),
        (("lr", "loss"), (0.1, "bce_with_logits")), (("lr", "loss"), (1.0, "bce_with_logits")),
        (("batchnorm", "loss"), (True, "bce_with_logits"))]
    for row in table.itertuples():
        (a, b), (la, lb), (a0, b0) = row.fields, row.levels, row.baselines
        others = [f for f in ("lr", "batchnorm", "loss") if f not in (a, b)]
        expected = _hand_interaction(frame, "final_val_loss_logits", a, la, a0, b, lb, b0, others)
        assert (row.estimate, row.ci_low, row.ci_high, row.n_seeds) == pytest.approx(expected, abs=1e-12)
    lr_bn = table.iloc[1]  # lr 1 vs 0.01 moves the loss by -0.4 without BatchNorm and +0.6 with it: +1.0
    assert lr_bn.clear and lr_bn.ci_low < 1.0 < lr_bn.ci_high
    assert abs(table.iloc[4].estimate) < 0.2  # BatchNorm x loss: none built in, only noise


# ---------------------------------------------------------------------- Holm, by hand
def test_holm_against_hand_examples():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.01, 0.02, 0.03, 0.04]) == pytest.approx([0.04, 0.06, 0.06, 0.06])
    adjusted = holm([0.2, math.nan, 0.6])  # NaN is not counted: m = 2
    assert adjusted[0] == pytest.approx(0.4) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.6)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).size == 0


def test_holm_is_applied_across_effects_and_interactions_together():
    frame = _canonical_frame()
    result = study_statistics(frame, "exact_loss")
    p = np.concatenate([result.effects.p_value, result.interactions.p_value])
    assert result.family == 6
    assert np.concatenate([result.effects.p_holm, result.interactions.p_holm]) == pytest.approx(holm(p))
    assert list(result.effects.clear_holm) == [bool(q < 0.05) for q in result.effects.p_holm]
    # a sentence is held (ticked on the page) only when Holm's correction keeps it clear, and says so when not
    assert len(result.held) == len(result.sentences) == len(result.clear)
    for sentence, clear, held in zip(result.sentences, result.clear, result.held):
        assert held == (clear and "Not clear after Holm's correction" not in sentence)
        assert not held or clear


# ---------------------------------------------------------------------- how many seeds
@pytest.mark.parametrize("n, sd", [(2, 1.0), (3, 0.5), (5, 2.0), (10, 1.0), (30, 0.1)])
def test_the_detectable_difference_has_80_percent_power_under_the_noncentral_t(n, sd):
    delta = detectable_difference(n, sd)
    df, crit = n - 1, stats.t.ppf(0.975, n - 1)
    nc = delta * math.sqrt(n) / sd
    assert stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) == pytest.approx(0.8, abs=1e-6)
    assert power(n, delta, sd) == pytest.approx(0.8, abs=1e-6)
    assert detectable_difference(n, 2 * sd) == pytest.approx(2 * delta)  # it scales with the sd


def test_the_detectable_difference_is_found_80_percent_of_the_time_by_simulation():
    rng = np.random.default_rng(0)
    n, sd = 4, 1.0
    delta = detectable_difference(n, sd)
    d = rng.normal(delta, sd, size=(40_000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert rejected == pytest.approx(0.8, abs=0.01)


def test_seeds_needed_against_the_t_distribution_and_published_values():
    # G*Power, one-sample / paired t, two-sided, alpha 0.05, power 0.8: d = 0.5 needs 34, d = 0.8 needs 15, d = 1 10
    assert [seeds_needed(d, 1.0) for d in (0.5, 0.8, 1.0)] == [34, 15, 10]
    for d in (0.3, 0.5, 2.0):
        n = seeds_needed(d, 1.0)
        assert power(n, d, 1.0) >= 0.8 > power(n - 1, d, 1.0) if n > 2 else power(n, d, 1.0) >= 0.8
    assert seeds_needed(-0.5, 1.0) == 34  # the sign does not matter
    assert seeds_needed(1e-6, 1.0) == math.inf and seeds_needed(0.0, 1.0) == math.inf
    assert math.isnan(detectable_difference(1, 1.0)) and math.isnan(seeds_needed(1.0, math.nan))


def test_statistics_give_every_effect_its_seeds_figures():
    frame = _canonical_frame()
    result = study_statistics(frame, "accuracy", difference=0.01)
    for table in (result.effects, result.interactions):
        assert table["detectable"].tolist() == pytest.approx(
            [detectable_difference(int(n), sd) for n, sd in zip(table.n_seeds, table.sd)])
        assert table["seeds_needed"].tolist() == [seeds_needed(0.01, sd) for sd in table.sd]
    assert result.power_sentences[0].startswith("BatchNorm: 3 seeds detect a difference of ")
    assert "; 0.01 needs " in result.power_sentences[0]
    with pytest.raises(ValueError, match="finite non-zero"):
        study_statistics(frame, difference=0.0)


# ---------------------------------------------------------------------- the canonical study
def _canonical_store(store: Store) -> int:
    """The bn-act-loss study as stored by a real run (its 24 summaries, tests/fixtures)."""
    spec = STUDIES["bn-act-loss"]
    by_slot = {(r["batchnorm"], r["activation"], r["loss"], r["seed"]): r["summary"] for r in CANONICAL}
    return store_study(store, spec, lambda v, s: by_slot[(v["batchnorm"], v["activation"], v["loss"], s)])


def _canonical_frame() -> pd.DataFrame:
    rows = [{"run_id": i, "status": "finished", "batchnorm": r["batchnorm"], "activation": r["activation"],
             "loss": r["loss"], "seed": r["seed"], **r["summary"]} for i, r in enumerate(CANONICAL)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("judge_name", ["exact_loss", "own_loss"])
def test_the_canonical_study_says_its_interaction_before_the_main_effects(store, judge_name):
    study_id = _canonical_store(store)
    summary = summarize(store, study_id, judge_name)
    assert summary["judge"] == judge_name and summary["metric"] == JUDGES[judge_name].column
    bn_loss = next(i for i in summary["interactions"] if i["fields"] == ["batchnorm", "loss"])
    assert {"fields", "levels", "estimate", "ci_low", "ci_high", "clear"} <= set(bn_loss)
    assert bn_loss["levels"] == [True, "bce_with_logits"] and bn_loss["clear"]
    sentences = summary["sentences"]
    said = next(i for i, s in enumerate(sentences) if s.startswith("BatchNorm matters only with bce: with bce it"))
    main = next(i for i, s in enumerate(sentences) if re.match(r"BatchNorm (lowers|raises) ", s))
    assert said < main
    assert "with bce_with_logits it makes no clear difference" in sentences[said]
    assert "on average over " in sentences[main] and "the interaction above says where it holds" in sentences[main]
    json.dumps(summary, default=str)  # what `study --json` prints


def test_the_canonical_interaction_on_the_exact_loss_in_numbers():
    result = study_statistics(_canonical_frame())  # the default judge: the exact val loss
    assert result.judge.name == "exact_loss"
    (row,) = [r for r in result.interactions.itertuples() if r.fields == ["batchnorm", "loss"]]
    assert row.estimate == pytest.approx(5749.2, abs=0.1) and row.clear
    assert row.effect_at_baseline == pytest.approx(-5749.3, abs=0.5)  # BatchNorm with bce
    assert abs(row.effect_at_level) < 0.5  # BatchNorm with bce_with_logits: a tenth or so, not clear
    assert result.sentences[0].startswith("BatchNorm matters only with bce: with bce it lowers final exact val loss "
                                          "by 5,749 (95% CI 1,003 to 10,496)")
    # three seeds of an exact loss spread from 1,400 to 9,400: clear alone, not across the 6 effects and interactions
    assert row.p_holm == pytest.approx(0.209, abs=0.001) and not row.clear_holm
    assert result.sentences[0].endswith("Not clear after Holm's correction for the 6 effects and interactions with a "
                                        "p-value (adjusted p 0.21).")


def test_interaction_sentences_for_each_shape():
    base = {"fields": ["batchnorm", "loss"], "levels": [True, "bce_with_logits"], "baselines": [False, "bce"],
            "metric": "final_val_loss_logits", "n_seeds": 3}
    same = interaction_sentence({**base, "estimate": 0.5, "ci_low": 0.2, "ci_high": 0.8, "clear": True,
                                 "effect_at_baseline": -1.0, "effect_at_baseline_ci_low": -1.2,
                                 "effect_at_baseline_ci_high": -0.8, "effect_at_level": -0.5,
                                 "effect_at_level_ci_low": -0.7, "effect_at_level_ci_high": -0.3})
    assert same.startswith("BatchNorm matters less with bce_with_logits than with bce: with bce_with_logits it "
                           "lowers final exact val loss by 0.50 (95% CI 0.30 to 0.70)")
    # clear at one level and not at the other, though nearly as large there: "more", not "only" (as run by QA: the
    # effect with relu was 89% of that with elu, its interval reaching 0 by 0.005)
    nearly = interaction_sentence({**base, "estimate": -0.036, "ci_low": -0.06, "ci_high": -0.01, "clear": True,
                                   "effect_at_baseline": -0.25, "effect_at_baseline_ci_low": -0.50,
                                   "effect_at_baseline_ci_high": 0.0049, "effect_at_level": -0.28,
                                   "effect_at_level_ci_low": -0.50, "effect_at_level_ci_high": -0.066})
    assert nearly.startswith("BatchNorm matters more with bce_with_logits than with bce: with bce_with_logits it "
                             "lowers final exact val loss by 0.28 (95% CI 0.066 to 0.50); with bce it lowers final "
                             "exact val loss by 0.25 (95% CI -0.0049 to 0.50), an interval that includes 0.")
    only = interaction_sentence({**base, "estimate": -0.2, "ci_low": -0.3, "ci_high": -0.1, "clear": True,
                                 "effect_at_baseline": -0.1, "effect_at_baseline_ci_low": -0.3,
                                 "effect_at_baseline_ci_high": 0.1, "effect_at_level": -0.3,
                                 "effect_at_level_ci_low": -0.4, "effect_at_level_ci_high": -0.2})
    assert only.startswith("BatchNorm matters only with bce_with_logits: with bce_with_logits it lowers")
    opposite = interaction_sentence({**base, "estimate": 2.0, "ci_low": 1.5, "ci_high": 2.5, "clear": True,
                                     "effect_at_baseline": -1.0, "effect_at_baseline_ci_low": -1.2,
                                     "effect_at_baseline_ci_high": -0.8, "effect_at_level": 1.0,
                                     "effect_at_level_ci_low": 0.8, "effect_at_level_ci_high": 1.2})
    assert opposite.startswith("BatchNorm works in opposite directions: with bce it lowers")
    none = interaction_sentence({**base, "estimate": 0.01, "ci_low": -0.02, "ci_high": 0.04, "clear": False})
    assert none == ("BatchNorm and bce_with_logits instead of bce: no clear interaction on final exact val loss "
                    "(+0.01, 95% CI -0.02 to 0.04 includes 0).")
    early = interaction_sentence({**base, "n_seeds": 1, "estimate": 0.1, "ci_low": math.nan, "ci_high": math.nan,
                                  "clear": False})
    assert "cannot be judged yet" in early and "(there is 1)" in early


# ---------------------------------------------------------------------- judges
def test_judges_name_their_columns_and_refuse_unknown_names():
    assert judge(None).name == "exact_loss" and judge(None).column == "final_val_loss_logits"
    assert {j.column for j in JUDGES.values()} >= {"final_val_acc", "final_val_auc", "best_exact_epoch",
                                                   "exact_loss_area"}
    with pytest.raises(ValueError, match="choose one of: exact_loss, accuracy, auc, best_epoch, loss_area"):
        judge("val_loss")


def test_curve_measures():
    assert curve_measures([0, 1, 2, 3], [0.9, 0.5, 0.4, 0.45]) == (2.0, pytest.approx(2.25))
    assert curve_measures([2, 0, 1], [0.3, 0.3, 0.1]) == (1.0, pytest.approx(0.7))  # sorted by epoch first
    assert curve_measures([0, 1], [0.5, math.nan]) == (0.0, math.inf)
    # a run that never got under ln 2 (a coin flip's loss) never learned: no best epoch, not its first one
    best, area = curve_measures([0, 1, 2], [7985.0, 9000.0, 8000.0])
    assert math.isnan(best) and area == pytest.approx(24985.0)
    assert curve_measures([0, 1], [0.7, 0.69])[0] == 1.0  # 0.69 < ln 2 = 0.6931...
    assert math.isnan(curve_measures([0, 1], [0.7, math.log(2)])[0])
    best, area = curve_measures([], [])
    assert math.isnan(best) and math.isnan(area)


def test_curve_judges_read_the_stored_exact_loss_curve(store):
    spec = StudySpec(name="curves", base=SMALL, vary={"batchnorm": [False, True]}, seeds=2)
    study_id = store_study(store, spec, lambda v, s: {"final_val_loss_logits": 0.5})
    for run in store.list_runs(study_id=study_id):
        bn = run.config["batchnorm"]
        values = [1.0, 0.5, 0.2] if bn else [1.0, 0.6, 0.65]
        store.log_metrics(run.id, [MetricRow("val_loss_logits", 10 * (e + 1), e, v, float(e))
                                   for e, v in enumerate(values)])
    frame = study_frame(store, study_id, curves=True)
    assert frame.set_index("batchnorm")["exact_loss_area"].to_dict() == pytest.approx({False: 2.25, True: 1.7})
    assert list(frame["best_exact_epoch"]) == [1.0, 1.0, 2.0, 2.0]
    assert "exact_loss_area" not in study_frame(store, study_id).columns
    summary = summarize(store, study_id, "loss_area")
    (effect,) = summary["effects"]
    assert effect["difference"] == pytest.approx(1.7 - 2.25) and summary["interactions"] == []
    assert summarize(store, study_id, "best_epoch")["effects"][0]["difference"] == pytest.approx(1.0)


def test_ranking_by_a_judge_orders_by_it_with_its_interval():
    frame = _canonical_frame()
    table = ranking(frame, metric="final_val_acc")
    assert table["final_val_acc_mean"].is_monotonic_decreasing  # higher is better: best first
    first = frame[(frame.batchnorm == True) & (frame.activation == "elu") & (frame.loss == "bce_with_logits")]  # noqa: E712
    mean, low, high = first.final_val_acc.mean(), *stats.t.interval(0.95, 2, loc=first.final_val_acc.mean(),
                                                                     scale=stats.sem(first.final_val_acc))
    row = table.iloc[0]
    assert (row.final_val_acc_mean, row.final_val_acc_ci_low, row.final_val_acc_ci_high) == pytest.approx(
        (mean, low, high))
    assert ranking(frame, metric="final_val_loss_logits")["final_val_loss_logits_mean"].is_monotonic_increasing


# ---------------------------------------------------------------------- two groups of runs (Compare)
def test_welch_difference_against_the_formula():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, math.nan]
    result = welch_difference(a, b)
    va, vb = np.var(a, ddof=1) / 4, np.var([3, 5, 7], ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (result.n_a, result.n_b, result.difference) == (4, 3, 2.5)
    assert (result.ci_low, result.ci_high, result.df) == pytest.approx((2.5 - half, 2.5 + half, df))
    assert result.p_value == pytest.approx(stats.ttest_ind([3, 5, 7], a, equal_var=False).pvalue)
    ci = stats.ttest_ind([3, 5, 7], a, equal_var=False).confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high))
    assert not result.clear
    short = welch_difference([1.0], [2.0, 3.0])
    assert math.isnan(short.ci_low) and short.difference == 1.5


# ---------------------------------------------------------------------- tables for papers
def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table of `text` as rows of cells; checks the structure as it goes."""
    found, current = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            assert line.endswith("|"), line
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if current is None:
                current = [cells]
            else:
                assert len(cells) == len(current[0]), line
                current.append(cells)
        elif current is not None:
            assert all(re.fullmatch(r":?-{3,}:?", c) for c in current[1]), current[1]
            found.append([current[0], *current[2:]])
            current = None
    return found


def latex_tables(text: str) -> list[list[list[str]]]:
    found = []
    for spec, body in re.findall(r"\\begin\{tabular\}\{([lrc]+)\}\n(.*?)\\end\{tabular\}", text, flags=re.S):
        rows = []
        for line in body.splitlines():
            if line == "\\hline":
                continue
            assert line.endswith("\\\\"), line
            cells = re.split(r"(?<!\\)&", line[:-2])
            assert len(cells) == len(spec), line
            rows.append([c.strip() for c in cells])
        found.append(rows)
    assert text.count("\\begin{tabular}") == text.count("\\end{tabular}") == len(found)
    return found


def test_study_tables_parse_as_markdown_and_latex():
    frame = _canonical_frame()
    result = study_statistics(frame)
    ranked = ranking(frame, metric=result.judge.column)
    factors = ["batchnorm", "activation", "loss"]
    md = markdown_tables(tables.study_tables("bn-act-loss", ranked, factors, result, "markdown"))
    tex = latex_tables(tables.study_tables("bn-act-loss", ranked, factors, result, "latex"))
    for parsed in (md, tex):
        ranking_rows, effect_rows, interaction_rows = parsed
        assert len(ranking_rows) == 9 and len(effect_rows) == 4 and len(interaction_rows) == 4
        assert ranking_rows[0][:5] == ["rank", "batchnorm", "activation", "loss", "n seeds"]
        assert ranking_rows[1][:5] == ["1", "true", "elu", "bce\\_with\\_logits" if parsed is tex else
                                       "bce_with_logits", "3"]
    assert md[0][1][5] == "0.1288 ± 0.08012" and tex[0][1][5] == "0.1288 $\\pm$ 0.08012"
    assert md[1][1] == ["BatchNorm", "-2875 ± 2373", "0.209", "3"]
    assert md[2][2][0] == "BatchNorm × bce_with_logits instead of bce" and md[2][2][1] == "5749 ± 4746"
    assert tex[2][2][0] == "BatchNorm $\\times$ bce\\_with\\_logits instead of bce"
    with pytest.raises(ValueError, match="markdown, latex"):
        tables.study_tables("x", ranked, factors, result, "html")


def test_latex_and_markdown_escape_what_they_must():
    table = pd.DataFrame({"name": ["a|b", "50% & $x_1$ #{~^}\\"], "value": ["1", "–"]})
    assert markdown_tables(tables.markdown(table))[0] == [["name", "value"], ["a\\|b", "1"],
                                                         ["50% & $x_1$ #{~^}\\\\", "–"]]
    (rows,) = latex_tables(tables.latex(table))
    assert rows[2] == ["50\\% \\& \\$x\\_1\\$ \\#\\{\\textasciitilde{}\\textasciicircum{}\\}\\textbackslash{}", "--"]
    # a sign is math's minus, a comparison math's < (text mode prints "-" as a hyphen, "<" as "¡"); words keep "-"
    assert tables.latex_escape("-2875 ± 2373, < 0.001, -∞, bn-act-loss") == \
        "$-$2875 $\\pm$ 2373, $<$ 0.001, $-$$\\infty$, bn-act-loss"


def run_export(store, *argv):
    parser = argparse.ArgumentParser()
    export_cli.add_export_parser(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = export_cli.cmd_export(parser.parse_args(["export", *argv]), store, out, err)
    return code, out.getvalue(), err.getvalue()


def test_export_format_table_writes_the_study_tables(store, tmp_path):
    study_id = _canonical_store(store)
    code, out, _ = run_export(store, "--format", "table", "--study", "bn-act-loss", "--out", "-")
    assert code == 0 and len(markdown_tables(out)) == 3 and "### Interactions" in out
    code, out, _ = run_export(store, "--study", str(study_id), "--judge", "accuracy", "--out", str(tmp_path / "t.tex"))
    assert code == 0 and out.startswith(f"wrote {tmp_path / 't.tex'} (table, latex")
    text = (tmp_path / "t.tex").read_text()
    assert len(latex_tables(text)) == 3 and "val accuracy (mean $\\pm$ 95\\% CI)" in text
    code, out, _ = run_export(store, "--format", "table", "--study", "bn-act-loss", "--table-format", "markdown",
                              "--out", str(tmp_path))
    assert code == 0 and (tmp_path / "bn-act-loss_exact_loss.md").exists()
    for argv, field in ((["--study", "nope"], "study"), (["--study", "bn-act-loss", "--judge", "loss"], "judge"),
                        (["--study", "bn-act-loss", "--table-format", "csv"], "table-format"), ([], "study")):
        with pytest.raises(ConfigError) as info:
            run_export(store, "--format", "table", *argv, "--out", str(tmp_path / "x.md"))
        assert info.value.field == field
    with pytest.raises(ConfigError) as info:  # every other format still needs runs
        run_export(store, "--format", "csv", "--out", str(tmp_path / "x.csv"))
    assert info.value.field == "runs"


def test_study_judge_and_difference_flags(store, tmp_path):
    _canonical_store(store)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--db", store.url, "study", "--study", "bn-act-loss", "--judge", "val_loss"], out=out, err=err)
    assert code == 2 and "judge" in err.getvalue()
    assert "exact_loss, accuracy, auc, best_epoch, loss_area, own_loss" in err.getvalue()
    code = cli.main(["--db", store.url, "study", "--study", "bn-act-loss", "--difference", "zero"], out=out, err=err)
    assert code == 2 and "difference" in err.getvalue()
    out = io.StringIO()
    code = cli.main(["--db", store.url, "study", "--study", "bn-act-loss", "--judge", "accuracy", "--difference",
                     "0.05", "--json"], out=out, err=io.StringIO())
    summary = json.loads(out.getvalue())
    assert code == 0 and summary["judge"] == "accuracy" and summary["difference"] == 0.05
    assert all("seeds_needed" in row and "p_holm" in row for row in summary["effects"] + summary["interactions"])
    out = io.StringIO()
    assert cli.main(["--db", store.url, "study", "--study", "bn-act-loss"], out=out, err=io.StringIO()) == 0
    text = out.getvalue()
    assert "ranked by exact val loss" in text and "BatchNorm matters only with bce" in text
    assert text.index("BatchNorm matters only with bce") < text.index("  - BatchNorm lowers")
    assert "Holm-corrected across the 6 effects and interactions" in text
    assert text.startswith("study 1 'bn-act-loss': 24 of 24 runs have a result (finished 24)")
    # runs left interrupted (a worker killed) are stored but have no result: "12 of 24", not "24 of 24"
    from core.cli.study import format_summary

    assert summary["warning"] is None  # judged on accuracy: one yardstick for every loss
    err = io.StringIO()
    assert cli.main(["--db", store.url, "study", "--study", "bn-act-loss", "--judge", "own_loss"], out=io.StringIO(),
                    err=err) == 0
    assert "note: own_loss compares each run's own val loss, and this study varies loss" in err.getvalue()
    first = format_summary({**summary, "runs": 24, "status_counts": {"interrupted": 12, "finished": 12}})
    assert first.startswith("study 1 'bn-act-loss': 12 of 24 runs have a result (interrupted 12, finished 12)")


def test_run_groups_split_by_field_tag_or_pick_and_say_the_difference():
    from datetime import datetime

    from core.presentation import run_groups
    from core.store import Run

    def run(i, hidden, tags, loss):
        return Run(id=i, name=f"r{i}", status="finished", config={"hidden": hidden}, tags=tags,
                   summary={"final_val_loss_logits": loss}, created_at=datetime(2026, 1, 1))

    runs = [run(1, [64], ("a",), 0.50), run(2, (64,), ("a",), 0.52), run(3, [64, 64], ("b",), 0.30),
            run(4, [64, 64], ("a", "b"), 0.31), run(5, [64, 64], ("b",), 0.29), run(6, [64], (), math.nan)]
    assert run_groups.field_values(runs, "hidden") == ["[64]", "[64, 64]"]  # a list and a tuple are one value
    assert run_groups.run_tags(runs) == ["a", "b"]
    a, b = run_groups.split_runs(runs, "field:hidden", "[64]", "[64, 64]")
    assert [r.id for r in a] == [1, 2, 6] and [r.id for r in b] == [3, 4, 5]
    a, b = run_groups.split_runs(runs, "tag", "a", "b")
    assert [r.id for r in a] == [1, 2] and [r.id for r in b] == [3, 5]  # run 4 has both tags: in neither
    a, b = run_groups.split_runs(runs, "pick", [1, 2], [3, 4, 5])
    result = run_groups.group_difference(a, b, "final_val_loss_logits")
    assert (result.n_a, result.n_b) == (2, 3) and result.difference == pytest.approx(0.30 - 0.51)
    assert result == welch_difference([0.50, 0.52], [0.30, 0.31, 0.29])
    sentence = run_groups.difference_sentence(result, "A", "B", "final_val_loss_logits")
    assert sentence.startswith("B (3 runs) against A (2 runs): final exact val loss lower by 0.21 (95% CI ")
    assert "Welch t, unpaired, p = " in sentence
    # a diverged run's value is from before it broke: left out, and said so
    broke = Run(id=7, name="r7", status="diverged", config={}, summary={"final_val_loss_logits": 9e30},
                created_at=datetime(2026, 1, 1))
    assert run_groups.group_difference(a, [*b, broke], "final_val_loss_logits") == result
    told = run_groups.difference_sentence(result, "A", "B", "final_val_loss_logits",
                                          unfinished=run_groups.left_out(a, [*b, broke]))
    assert told.endswith(" 1 run that did not finish (diverged, failed, stopped or still running) left out.")
    table = run_groups.groups_table(result, "A", "B")
    assert list(table["group"]) == ["A", "B", "B − A"] and table["mean"].iloc[2] == pytest.approx(-0.21)
    with pytest.raises(ValueError, match="field:NAME, tag or pick"):
        run_groups.split_runs(runs, "colour", 1, 2)


def test_study_views_of_interactions_and_a_judged_ranking():
    from core.presentation import study_views

    frame = _canonical_frame()
    result = study_statistics(frame, "accuracy")
    view = study_views.interactions_view(result.interactions)
    assert list(view["fields"]) == ["batchnorm × activation", "batchnorm × loss", "activation × loss"]
    assert list(view["levels"]) == ["true × elu", "true × bce_with_logits", "elu × bce_with_logits"]
    assert view["baselines"].iloc[1] == "false × bce" and "metric" not in view
    table = study_views.judged_ranking_view(ranking(frame, metric="final_val_acc"), ["batchnorm", "activation",
                                                                                      "loss"], "final_val_acc")
    assert list(table.columns[:9]) == ["batchnorm", "activation", "loss", "runs", "n", "diverged", "failed",
                                       "final_val_acc_mean", "final_val_acc_ci_low"]
    assert table["final_val_acc_mean"].is_monotonic_decreasing and "final_val_acc_sd" not in table


def test_a_yes_no_field_reads_as_words_either_way():
    """A study's sentence names a switched-off flag in words ("no output ReLU", not "no an output ReLU")."""
    assert choice_words("output_relu", False, True) == "no output ReLU"
    assert choice_words("output_relu", True, False) == "an output ReLU"
    assert choice_words("batchnorm", False, True) == "no BatchNorm"
    assert choice_words("standardize", False, True) == "unstandardized inputs"
    assert choice_words("some_flag", False, True) == "some_flag=false instead of true"
    assert choice_words("some_flag", True, False) == "some_flag=true"


def test_variants_that_differ_by_float_rounding_make_no_difference():
    """Two variants whose losses differ by one unit in the last place (a sum taken in another order): each seed's
    contrast is rounding, not an effect. Before, contrasts that did not vary gave a zero-width interval off 0: a
    "clear" difference of 5.6e-17 with p = 0. Now they are 0: no difference, p = 1."""
    import numpy as np

    from core.analysis.effects import effects, without_rounding

    rows = []
    for seed, loss in enumerate([0.31, 0.29, 0.35]):
        rows.append({"status": "finished", "seed": seed, "flag": "a", "final_val_loss_logits": loss})
        rows.append({"status": "finished", "seed": seed, "flag": "b", "final_val_loss_logits": np.nextafter(loss, 1)})
    found = effects(pd.DataFrame(rows), factors=["flag"], metric="final_val_loss_logits").iloc[0]
    assert (found["difference"], found["ci_low"], found["ci_high"], found["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert not found["clear"]
    assert list(without_rounding(np.array([5.6e-17, -1e-3, 1e-12]), 0.3)) == [0.0, -1e-3, 1e-12]


# ---------------------------------------------------------------------- what divergence leaves out
def _diverging_frame(diverges) -> pd.DataFrame:
    """lr x batchnorm x 3 seeds of the exact val loss, a run diverged where `diverges(lr, bn, seed)`."""
    rows = []
    for seed in range(3):
        for lr in (0.01, 0.3):
            for bn in (False, True):
                bad = diverges(lr, bn, seed)
                rows.append({"run_id": len(rows), "name": "", "variant": "", "seed": seed, "lr": lr, "batchnorm": bn,
                             "status": "diverged" if bad else "finished",
                             "final_val_loss_logits": math.nan if bad else 0.3 + 0.01 * seed + 0.1 * lr + 0.02 * bn
                             + 0.001 * (seed * seed)})
    return pd.DataFrame(rows)


def test_effects_count_what_diverged_and_say_it():
    from core.analysis.effects import effects, effects_sentences

    frame = _diverging_frame(lambda lr, bn, seed: lr == 0.3 and not bn)  # the 3 runs of lr 0.3 without BatchNorm
    table = effects(frame, "final_val_loss_logits", factors=["lr", "batchnorm"]).set_index("factor")
    assert table.loc["lr", ["level_diverged", "level_ended", "baseline_diverged", "baseline_ended"]].tolist() \
        == [3, 6, 0, 6]
    assert table.loc["batchnorm", ["level_diverged", "level_ended", "baseline_diverged", "baseline_ended"]].tolist() \
        == [0, 6, 3, 6]
    # the difference is the survivors' (lr 0.3 with BatchNorm against lr 0.01 with BatchNorm): 0.1 * 0.29
    assert table.loc["lr", "difference"] == pytest.approx(0.029) and table.loc["lr", "pairs"] == 3
    lr_sentence, bn_sentence = effects_sentences(table.reset_index())
    assert lr_sentence.endswith(" 3 of 6 runs at lr 0.3 diverged, none at lr 0.01: lr 0.3 diverges more often, "
                                "which the difference leaves out: it compares the runs that finished.")
    assert bn_sentence.endswith(" 3 of 6 runs at batchnorm=false diverged, none at batchnorm=true: batchnorm=false "
                                "diverges more often, which the difference leaves out: it compares the runs that "
                                "finished.")
    # every run at a level diverged: nothing to average, and no "yet" (more seeds would diverge as well)
    frame = _diverging_frame(lambda lr, bn, seed: lr == 0.3)
    lr_sentence = effects_sentences(effects(frame, "final_val_loss_logits", factors=["lr", "batchnorm"]))[0]
    assert lr_sentence == ("lr 0.3 instead of 0.01 cannot be judged on final exact val loss: a diverged run has "
                           "none. All 6 runs at lr 0.3 diverged, none at lr 0.01: lr 0.3 diverges more often.")
    # the study's statistics say it too, after an interaction's qualification where there is one
    said = study_statistics(frame, "exact_loss").sentences
    assert any(s.startswith("lr 0.3 instead of 0.01 cannot be judged") and "All 6 runs at lr 0.3 diverged" in s
               for s in said)
    # no run diverged: nothing added
    frame = _diverging_frame(lambda lr, bn, seed: False)
    assert all("diverge" not in s for s in effects_sentences(effects(frame, "final_val_loss_logits",
                                                                     factors=["lr", "batchnorm"])))


def test_power_lines_do_not_plan_seeds_from_no_spread():
    # lr's effect is 0.1 * 0.29 at every seed: its sd is 0 up to float rounding
    frame = _diverging_frame(lambda lr, bn, seed: False)
    said = study_statistics(frame, "exact_loss", difference=0.01).power_sentences
    assert said[0] == ("lr 0.3 instead of 0.01: the difference is the same at each of the 3 seeds (sd 0), so there "
                       "is no spread to plan seeds from: any real difference shows at every seed.")
    # with a spread at each seed, the usual line: what 3 seeds detect, from that spread
    noise = {0: 0.0, 1: 0.01, 2: 0.03}
    frame["final_val_loss_logits"] += [noise[s] if bn else 0.0 for s, bn in zip(frame["seed"], frame["batchnorm"])]
    said = study_statistics(frame, "exact_loss").power_sentences
    sd = float(np.std([0.02, 0.03, 0.05], ddof=1))
    assert said[1] == f"BatchNorm: 3 seeds detect a difference of {fmt(detectable_difference(3, sd))} in final " \
                      "exact val loss."


def test_an_interaction_qualifies_its_own_level_and_a_diverged_corner_is_named():
    values = {(0.01, False): lambda s: 0.5 + 0.01 * s, (0.01, True): lambda s: 0.45 + 0.01 * s,
              (3.0, False): lambda s: 0.9 + 0.01 * s + 0.001 * s * s, (3.0, True): lambda s: 0.46 + 0.012 * s,
              (30.0, True): lambda s: 0.7 + 0.011 * s}  # lr 30 without BatchNorm diverges at every seed
    rows = [{"run_id": 0, "name": "", "variant": "", "seed": s, "lr": lr,
             "batchnorm": bn, "status": "finished" if (lr, bn) in values else "diverged",
             "final_val_loss_logits": values[(lr, bn)](s) if (lr, bn) in values else math.nan}
            for s in range(3) for lr in (0.01, 3.0, 30.0) for bn in (False, True)]
    said = study_statistics(pd.DataFrame(rows), "exact_loss").sentences
    lr3 = next(s for s in said if s.startswith("lr 3.0 instead of 0.01 raises"))  # the effect, not the interaction
    lr30 = next(s for s in said if s.startswith("lr 30.0 instead of 0.01 raises"))
    assert "on average over batchnorm: the interaction above says where it holds" in lr3
    # lr 30's difference comes from batchnorm=true alone, and no interaction of lr 30 was judged: none is pointed at
    assert "on average over" not in lr30 and "3 of 6 runs at lr 30.0 diverged" in lr30
    assert ("lr 30.0 instead of 0.01 and BatchNorm: their interaction on final exact val loss cannot be judged: every "
            "run of lr=30.0 with batchnorm=false diverged, so that combination has no result.") in said
