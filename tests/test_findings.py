import pytest

from core.analysis.findings import findings_for
from core.experiment.config import ExperimentConfig


def titles(config, summary, status="finished"):
    return [(f.severity, f.title) for f in findings_for(config, summary, status=status)]


def test_wrong_side_clamp_is_reported_with_its_share():
    out = titles(ExperimentConfig().to_dict(), {"peak_clamp_wrong_frac": 0.31, "steps": 10})
    assert ("problem", "Up to 31% of a batch's outputs were clamped on the wrong side: each costs 100 and passes no "
                       "gradient.") in out


def test_output_relu_floor():
    cfg = ExperimentConfig(output_relu=True, hidden=()).to_dict()
    assert ("problem", "Every prediction is ≥ 0.5: a ReLU before the sigmoid.") in titles(cfg,
                                                                                      {"min_pred_pos_rate": 1.0})


def test_frozen_optimizer():
    out = titles(ExperimentConfig().to_dict(), {"zero_update_steps": 40, "steps": 40})
    assert out[0] == ("problem", "The optimizer's updates round away: the weights do not move although the gradients "
                                 "are not zero.")
    some = titles(ExperimentConfig().to_dict(), {"zero_update_steps": 3, "steps": 40})
    assert ("warning", "On 3 of 40 steps the optimizer changed nothing although the gradient was non-zero.") in some


def test_diverged_names_the_step_and_good_run_says_so():
    assert titles(ExperimentConfig().to_dict(), {"diverged_step": 17}, status="diverged")[0][1].startswith(
        "Training diverged at step 17")
    good = titles(ExperimentConfig().to_dict(), {"final_val_acc": 0.95, "final_val_auc": 0.99, "steps": 5})
    assert good == [("good", "The model learned: validation accuracy 95.0%, AUC 0.990.")]


def test_nan_summary_values_are_not_findings():
    nan = float("nan")
    assert titles(ExperimentConfig().to_dict(), {"peak_clamp_wrong_frac": nan, "final_val_acc": nan}) == []


def test_wrong_side_saturation_under_logits_says_what_is_true_for_that_loss():
    """bce_with_logits charges a saturated wrong output |z| with gradient ±1: the title must not claim 100 and zero."""
    cfg = ExperimentConfig(loss="bce_with_logits").to_dict()
    found = findings_for(cfg, {"peak_clamp_wrong_frac": 0.16, "steps": 10}, status="finished")
    wrong = [f for f in found if "wrong side" in f.title]
    assert len(wrong) == 1
    assert wrong[0].severity == "warning"
    assert wrong[0].title == ("16% of outputs saturated on the wrong side: their probability is exactly 0 or 1, but "
                              "the exact loss still charges them |z| and corrects them with a full gradient.")
    assert "100" not in wrong[0].title and "zero" not in wrong[0].title
    assert "still train" in wrong[0].detail


# ---------------------------------------------------------------------- causes, with the fix as a config change
RAW = ExperimentConfig(dataset="breast_cancer", standardize=False, hidden=(64, 64)).to_dict()


@pytest.mark.parametrize("std, expected", [(9.99, False), (10.0, True), (596.0, True)])
def test_unscaled_inputs_are_named_from_a_feature_std_of_ten(std, expected):
    found = findings_for(RAW, {"input_std_max": std, "input_abs_max": 40 * std, "peak_clamp_frac": 0.5},
                         status="finished")
    named = [f for f in found if f.cause == "unscaled inputs"]
    assert bool(named) == expected
    if expected:
        assert named[0] is found[0]  # the cause comes before the symptoms it explains
        assert named[0].severity == "problem" and named[0].fix == {"standardize": True}
        assert f"reach {std:.3g}" in named[0].title


def test_standardized_or_batchnormed_inputs_are_not_a_problem():
    scaled = dict(RAW, standardize=True)
    assert not [f for f in findings_for(scaled, {"input_std_max": 596.0}, status="finished") if f.cause]
    bn = dict(RAW, batchnorm=True)
    (note,) = [f for f in findings_for(bn, {"input_std_max": 596.0, "input_abs_max": 4000.0}, status="finished")
               if f.cause == "unscaled inputs"]
    assert note.severity == "info"  # BatchNorm rescales the hidden layers: worth knowing, not what broke the run
    warned = findings_for(RAW, {"input_std_max": 596.0, "input_abs_max": 4000.0}, status="finished")
    assert warned[0].severity == "warning"  # unscaled, but no saturation was seen


def test_every_finding_with_a_cause_offers_a_fix_that_is_a_valid_config_change():
    summary = {"peak_clamp_wrong_frac": 0.3, "final_dead_relu_frac": 0.5, "peak_eps_clamp_frac": 0.2,
               "input_std_max": 50.0, "input_abs_max": 300.0, "diverged_step": 3, "steps": 10}
    cfg = dict(RAW, clamp_eps=0.1, lr=0.05, output_relu=True)
    found = findings_for(cfg, summary, status="diverged")
    fixes = {f.cause: f.fix for f in found if f.cause}
    assert fixes == {"unscaled inputs": {"standardize": True}, "learning rate too high": {"lr": 0.005},
                     "a ReLU before the sigmoid": {"output_relu": False},
                     "sigmoid saturation under BCELoss's clamp": {"loss": "bce_with_logits", "clamp_eps": None},
                     "clamp_eps too large": {"clamp_eps": None}, "dead ReLUs": {"activation": "elu"}}
    for fix in fixes.values():
        ExperimentConfig.from_dict({**cfg, **fix})  # each one applies to the run's config


def test_a_finding_as_json_has_severity_title_detail_cause_and_fix():
    (first, *_) = findings_for(RAW, {"input_std_max": 596.0, "input_abs_max": 4000.0, "peak_clamp_frac": 1.0},
                               status="finished")
    assert set(first.to_dict()) == {"severity", "title", "detail", "cause", "fix"}
    assert first.to_dict()["fix"] == {"standardize": True}


def test_calibration_and_a_small_rise_in_validation_loss_are_notes_not_problems():
    out = titles(ExperimentConfig().to_dict(), {"final_val_ece": 0.2, "best_val_loss": 0.36, "final_val_loss": 0.40,
                                                "best_val_epoch": 1, "epochs_completed": 15, "steps": 10})
    assert ("info", "The predicted probabilities are off by 0.20 on average (validation ECE).") in out
    assert ("info", "Validation loss rose 11% after its best (0.360 at epoch 1).") in out
    assert not [t for t in out if t[0] in ("problem", "warning")]
    calm = titles(ExperimentConfig().to_dict(), {"final_val_ece": 0.149, "steps": 10})
    assert not [t for t in calm if "ECE" in t[1]]


def test_a_few_dead_units_while_the_loss_falls_are_a_note():
    out = findings_for(ExperimentConfig().to_dict(), {"peak_dead_relu_frac": 0.4, "final_dead_relu_frac": 0.1,
                                                      "train_loss_drop": 0.8, "steps": 10}, status="finished")
    assert [(f.severity, f.cause) for f in out] == [("info", "")]
