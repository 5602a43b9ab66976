"""Proving a fix: `python -m core fix RUN_ID` trains the run's config and the fixed one over seeds and says, with a
95% CI on the exact validation loss, whether the fix helped."""

from __future__ import annotations

import io
import json
import math

import pytest
from scipy import stats

from core.cli.main import main
from core.jobs.counterfactual import _t_interval
from core.store import Store


def cli(db: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--db", db, *argv], out=out, err=err, env={})
    return code, out.getvalue(), err.getvalue()


def test_the_interval_is_the_t_interval_of_the_seed_differences():
    diffs = [-3.0, -1.0, -2.0]
    mean, low, high = _t_interval(diffs)
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd of (-3, -1, -2) is 1
    assert mean == -2.0 and low == pytest.approx(-2.0 - half) and high == pytest.approx(-2.0 + half)
    assert _t_interval([1.0, math.nan, 3.0])[0] == 2.0  # a seed without a loss is no evidence either way
    assert all(math.isnan(v) for v in _t_interval([math.nan, 1.0])[1:])


def test_fix_proves_that_standardizing_unscaled_inputs_helps(tmp_path):
    db = f"sqlite:///{tmp_path / 'fix.db'}"
    code, out, err = cli(db, "train", "--dataset", "breast_cancer", "--standardize", "false", "--hidden", "16",
                         "--optimizer", "adam", "--lr", "0.05", "--epochs", "3", "--json")
    assert code == 0, err
    run_id = json.loads(out)["id"]
    code, out, err = cli(db, "fix", str(run_id), "--seeds", "3", "--json")
    assert code == 0, err
    assert err.startswith(f"run {run_id}: unscaled inputs; trying standardize=true over 3 seeds\n")
    verdict = json.loads(out)
    assert (verdict["cause"], verdict["fix"], verdict["metric"]) == ("unscaled inputs", {"standardize": True},
                                                                     "final_val_loss_logits")
    assert verdict["verdict"] == "helped" and verdict["ratio_high"] < 1  # judged on fixed / baseline, per seed
    assert all(f < b for b, f in zip(verdict["baseline"], verdict["fixed"]))
    logs = [math.log(f / b) for b, f in zip(verdict["baseline"], verdict["fixed"])]
    assert verdict["ratio"] == pytest.approx(math.exp(sum(logs) / 3))
    assert verdict["sentence"].startswith("The fix helped: standardize=true lowered the exact validation loss from")
    with Store(db) as store:
        tagged = [r for r in store.list_runs() if f"fix:{run_id}" in r.tags]
        assert len(tagged) == 6 and {r.config["standardize"] for r in tagged} == {False, True}
        assert sorted(r.config["seed"] for r in tagged) == [0, 0, 1, 1, 2, 2]
    # proving again with a fourth seed trains only that seed's two runs; the first three come from the first proof
    code, out, err = cli(db, "fix", str(run_id), "--seeds", "4", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["baseline"][:3] == verdict["baseline"] and again["fixed"][:3] == verdict["fixed"]
    assert again["run_ids"]["baseline"][:3] == verdict["run_ids"]["baseline"]
    assert err.count("(an earlier proof's run)") == 6
    with Store(db) as store:
        assert len([r for r in store.list_runs() if f"fix:{run_id}" in r.tags]) == 8


def test_fix_without_a_proposed_fix_or_with_one_seed_is_bad_input(tmp_path):
    db = f"sqlite:///{tmp_path / 'none.db'}"
    with Store(db) as store:
        run_id = store.create_run(name="empty", config={})
    code, _, err = cli(db, "fix", str(run_id))
    assert code == 2 and "no finding of run" in err and err.count("\n") == 1
    code, _, err = cli(db, "fix", "999")
    assert code == 2 and "no run with id 999" in err
    for seeds in ("1", "٣", "x"):  # a digit of another script is not a whole number here either
        code, _, err = cli(db, "fix", str(run_id), "--seeds", seeds)
        assert code == 2 and "seeds" in err and "2 to" in err, (seeds, err)


def test_a_fix_that_makes_seeds_diverge_hurt_and_the_means_are_paired():
    from core.jobs.counterfactual import judge

    nan = math.nan
    # as run: every seed finished at a huge loss; with the fix two of three diverged, one finished lower
    v = judge(4, "sigmoid saturation", {"loss": "bce_with_logits"}, [1_000_000.0, 1_500_000.0, 62.77],
              [nan, nan, 8.97])
    assert v.verdict == "hurt"
    assert v.difference == pytest.approx(8.97 - 62.77) and math.isnan(v.ci_low)  # one pair: no interval
    assert "NaN" not in v.sentence and "2 of 3 seeds diverged or failed" in v.sentence
    assert "from 62.8 to 8.97" in v.sentence and "too few for an interval" in v.sentence  # that seed's pair only


def test_the_averages_said_agree_with_the_ratio_judged():
    """Five seeds at 1 fall to 0.1, one at 100 rises to 150: the ratio (geometric) falls 6.4 times, the arithmetic
    means rise (17.5 to 25.1). The sentence gives the geometric means, which fall with it."""
    from core.jobs.counterfactual import judge

    v = judge(1, "x", {"loss": "bce_with_logits"}, [1, 1, 1, 1, 1, 100], [0.1, 0.1, 0.1, 0.1, 0.1, 150])
    assert v.verdict == "helped" and v.ratio == pytest.approx((0.1 ** 5 * 1.5) ** (1 / 6))
    assert "lowered the exact validation loss from 2.15 to 0.338 on average (geometric means), 6.37 times lower" \
        in v.sentence, v.sentence


def test_more_seeds_lost_as_run_is_a_help_and_the_interval_names_its_seeds():
    from core.jobs.counterfactual import judge

    nan = math.nan
    v = judge(1, "x", {"lr": 0.1}, [nan, 2.0, 4.0, 8.0], [0.5, 1.0, 2.0, 4.0])
    # the three paired seeds halve the loss exactly: ratio 0.5 with a zero-width interval
    assert v.verdict == "helped" and v.ratio == pytest.approx(0.5)
    assert "from 4 to 2 on average (geometric means)" in v.sentence and "3 seeds where both finished" in v.sentence
    assert v.sentence.startswith("The fix helped: as run 1 of 4 seeds diverged or failed, against 0 with lr=0.1.")
    # fewer seeds lost with the fix, the others unclear (and higher): helped on the count, and said so
    mixed = judge(1, "x", {"lr": 0.1}, [nan, 2.0, 4.0], [1.0, 2.2, 4.1])
    assert mixed.verdict == "helped" and "lowered" not in mixed.sentence and "a change of +6.2%" in mixed.sentence
    # both sides lost every seed: nothing to judge, said so
    both = judge(1, "x", {"lr": 0.1}, [nan, nan], [nan, nan])
    assert both.verdict == "not judged" and "could not be judged" in both.sentence
    # every seed lost with the fix, none as run
    hurt = judge(1, "x", {"lr": 0.1}, [1.0, 2.0], [nan, nan])
    assert hurt.verdict == "hurt" and "with lr=0.1 every seed diverged or failed" in hurt.sentence


def test_a_ratio_near_one_reads_as_a_percent_change():
    from core.jobs.counterfactual import judge

    # clipping under Adam: the exact loss moves by a few hundredths of a percent at every seed
    baseline, fixed = [0.6671, 0.692, 0.6966], [0.6674, 0.6921, 0.6967]
    proof = judge(1, "gradient clipping too tight", {"grad_clip": None}, baseline, fixed)
    ratio = math.exp(sum(math.log(f / b) for b, f in zip(baseline, fixed)) / 3)
    assert f"a change of {(ratio - 1) * 100:+.2g}%" in proof.sentence
    assert "1 times" not in proof.sentence and " to +" in proof.sentence


def test_a_proof_where_no_seed_finished_either_way_is_not_judged():
    from core.jobs.counterfactual import judge

    nan = math.nan
    proof = judge(1, "float16 overflow", {"dtype": "float32"}, [nan, nan], [nan, nan])
    assert proof.verdict == "not judged" and "could not be judged" in proof.sentence
    assert judge(1, "c", {"lr": 0.1}, [nan, nan], [0.5, 0.6]).verdict == "helped"  # the fix finished, as run did not
