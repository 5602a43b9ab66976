from core.analysis.findings import findings_for
from core.experiment.config import ExperimentConfig


def titles(config, summary, status="finished"):
    return [(f.severity, f.title) for f in findings_for(config, summary, status=status)]


def test_wrong_side_clamp_is_reported_with_its_share():
    out = titles(ExperimentConfig().to_dict(), {"peak_clamp_wrong_frac": 0.31, "steps": 10})
    assert ("problem", "31% of outputs were clamped on the wrong side: their loss is 100 and their gradient is "
                       "zero.") in out


def test_output_relu_floor():
    cfg = ExperimentConfig(output_relu=True, hidden=()).to_dict()
    assert ("problem", "Every prediction is ≥ 0.5: a ReLU before the sigmoid.") in titles(cfg, {"min_pred_pos_rate": 1.0})


def test_frozen_optimizer():
    out = titles(ExperimentConfig().to_dict(), {"zero_update_steps": 40, "steps": 40})
    assert out[0] == ("problem", "The optimizer never changed the weights, although the gradients were not zero.")


def test_diverged_names_the_step_and_good_run_says_so():
    assert titles(ExperimentConfig().to_dict(), {"diverged_step": 17}, status="diverged")[0][1].startswith(
        "Training diverged at step 17")
    good = titles(ExperimentConfig().to_dict(), {"final_val_acc": 0.95, "final_val_auc": 0.99, "steps": 5})
    assert good == [("good", "The model learned: validation accuracy 95.0%, AUC 0.990.")]


def test_nan_summary_values_are_not_findings():
    assert titles(ExperimentConfig().to_dict(), {"peak_clamp_wrong_frac": float("nan"), "final_val_acc": float("nan")}) == []


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
