"""The catalogue of seeded failures is well formed, and a few fast entries are diagnosed end to end through the
command line (train from the entry's config, then `show --json` names the known cause first)."""

import io
import json

import pytest

from core.analysis.causes import CAUSES
from core.cli.main import main
from core.experiment.catalogue import CATALOGUE, FAILURES, HEALTHY, entry
from core.experiment.config import ExperimentConfig


def test_at_least_thirty_failures_and_ten_healthy_configs_with_unique_names():
    assert len(FAILURES) >= 30 and len(HEALTHY) >= 10
    names = [e.name for e in CATALOGUE]
    assert len(set(names)) == len(names)
    assert all(e.healthy for e in HEALTHY) and not any(e.healthy for e in FAILURES)


@pytest.mark.parametrize("e", FAILURES, ids=lambda e: e.name)
def test_every_failure_names_a_known_cause_and_a_fix_that_is_a_valid_config_change(e):
    assert e.cause in CAUSES
    assert e.fix
    fixed = e.config.replace(**e.fix)  # validated: raises ConfigError if the change is not allowed
    assert fixed != e.config
    assert ExperimentConfig.from_dict(e.config.to_dict()) == e.config  # stored and read back unchanged


def test_the_catalogue_covers_the_failure_classes_people_meet():
    covered = {e.cause for e in FAILURES}
    assert {"a ReLU before the sigmoid", "unscaled inputs", "learning rate too high", "learning rate too low",
            "half-precision saturation", "Adam's denominator rounds to 0 in float16", "clamp_eps too large",
            "weight decay too strong", "predicting the majority class",
            "dead ReLUs", "BatchNorm with tiny batches", "BatchNorm momentum too high", "random labels",
            "overfitting", "vanishing gradients"} <= covered


def test_entries_are_small_so_the_catalogue_trains_in_minutes():
    for e in CATALOGUE:
        n = 569 if e.config.dataset == "breast_cancer" else e.config.n_samples
        steps = e.config.epochs * -(-round(n * (1 - e.config.val_fraction)) // e.config.batch_size)
        assert steps <= 1000, e.name
    with pytest.raises(KeyError, match="not in the catalogue"):
        entry("no-such-entry")


def cli(*argv, db):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--db", db, *argv], out=out, err=err, env={})
    assert code == 0, err.getvalue()
    return out.getvalue()


@pytest.mark.parametrize("name", ["relu-sigmoid-linear", "lr-low-linear", "linear-model-xor", "too-few-steps",
                                  "dead-relu-negative-bias"])
def test_fast_entries_are_diagnosed_through_the_command_line(name, tmp_path):
    e = entry(name)
    db = f"sqlite:///{tmp_path / 'catalogue.db'}"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(e.config.to_dict()))
    trained = json.loads(cli("train", "--config", str(path), "--json", db=db))
    shown = json.loads(cli("show", str(trained["id"]), "--json", db=db))
    top = next(f for f in shown["findings"] if f["severity"] in ("problem", "warning"))
    assert top["cause"] == e.cause
    assert set(top) == {"severity", "title", "detail", "cause", "fix"}
    ExperimentConfig.from_dict(shown["config"]).replace(**top["fix"])


def test_a_healthy_entry_raises_no_problem_through_the_command_line(tmp_path):
    e = entry("ok-article-fixed")
    db = f"sqlite:///{tmp_path / 'catalogue.db'}"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(e.config.to_dict()))
    trained = json.loads(cli("train", "--config", str(path), "--json", db=db))
    shown = json.loads(cli("show", str(trained["id"]), "--json", db=db))
    assert not [f for f in shown["findings"] if f["severity"] == "problem"]
    assert shown["summary"]["calibration"]["count"] and 0 <= shown["summary"]["final_val_ece"] <= 1
