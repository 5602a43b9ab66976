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


def test_fix_without_a_proposed_fix_or_with_one_seed_is_bad_input(tmp_path):
    db = f"sqlite:///{tmp_path / 'none.db'}"
    with Store(db) as store:
        run_id = store.create_run(name="empty", config={})
    code, _, err = cli(db, "fix", str(run_id))
    assert code == 2 and "no finding of run" in err and err.count("\n") == 1
    code, _, err = cli(db, "fix", "999")
    assert code == 2 and "no run with id 999" in err
