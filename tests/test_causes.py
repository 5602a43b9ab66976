"""Every cause's trigger on hand-made summaries, on both sides of each threshold, and the order of precedence."""

import pytest

from core.analysis import causes as c
from core.analysis import evidence as ev
from core.analysis.findings import findings_for
from core.experiment.config import ExperimentConfig

PLATEAU = {"train_loss_drop": 0.01, "final_train_loss_logits": 0.69, "steps": 200}
LEARNED = {"train_loss_drop": 0.8, "final_train_loss_logits": 0.1, "steps": 200}
SWINGS = {"val_loss_osc": 2.0, "train_loss_osc": 0.8, "loss_spikes": 0, "train_loss_drop": 0.3}


def cfg(**changes):
    return ExperimentConfig(**changes).to_dict()


def named(config, summary, status="finished"):
    """The causes named, in order."""
    return [f.cause for f in findings_for(config, summary, status=status) if f.cause]


def top(config, summary, status="finished"):
    return next(f for f in findings_for(config, summary, status=status) if f.severity in ("problem", "warning"))


# ---------------------------------------------------------------------- shared evidence
@pytest.mark.parametrize("drop, final, expected", [(0.099, 0.69, True), (0.1, 0.69, False), (0.05, 0.2, False),
                                                   (0.05, 0.21, True)])
def test_plateau_is_a_small_drop_that_stayed_high(drop, final, expected):
    assert ev.plateau({"train_loss_drop": drop, "final_train_loss_logits": final}) is expected


@pytest.mark.parametrize("changes, expected", [
    ({}, True),
    ({"val_loss_osc": 0.99}, False),
    ({"train_loss_osc": 0.49}, False),
    ({"train_loss_osc": 0.1, "loss_spikes": 3}, True),
    ({"train_loss_osc": 0.1, "loss_spikes": 2}, False),
    ({"train_loss_osc": 0.1, "train_loss_drop": -0.5}, True),
])
def test_unstable_needs_the_validation_loss_to_swing_and_training_to_show_it_too(changes, expected):
    assert ev.unstable({**SWINGS, **changes}) is expected


# ---------------------------------------------------------------------- the rules
def test_relu_before_sigmoid_cites_the_heads_reach():
    f = top(cfg(output_relu=True, hidden=()), {"min_pred_pos_rate": 1.0, "min_val_logit": 0.0, **PLATEAU})
    assert (f.cause, f.fix) == (c.RELU_SIGMOID, {"output_relu": False})
    assert "lowest validation logit over the whole run was 0" in f.detail


def test_random_labels_come_from_the_data_set():
    f = top(cfg(dataset="random"), {"final_val_auc": 0.52, **LEARNED})
    assert (f.cause, f.severity, f.fix) == (c.RANDOM_LABELS, "warning", {"dataset": "gaussian"})
    assert "AUC 0.52" in f.detail
    assert c.RANDOM_LABELS not in named(cfg(dataset="gaussian"), {"final_val_auc": 0.52})


@pytest.mark.parametrize("where, dtype, optimizer, momentum, cause, fix", [
    ("gradient", "float16", "adam", 0.0, c.FLOAT16_OVERFLOW, {"dtype": "float32"}),
    ("forward", "float16", "sgd", 0.0, c.FLOAT16_OVERFLOW, {"dtype": "float32"}),
    ("update", "float16", "adam", 0.0, c.FLOAT16_ADAM, {"dtype": "float32"}),  # eps and v round to 0: m / 0
    ("update", "float16", "adamw", 0.0, c.FLOAT16_ADAM, {"dtype": "float32"}),
    ("update", "float16", "sgd", 0.0, c.LR_HIGH, {"lr": 0.001}),
    ("forward", "float32", "sgd", 0.99, c.MOMENTUM, {"momentum": 0.9}),
    ("forward", "float32", "sgd", 0.9, c.LR_HIGH, {"lr": 0.001}),
])
def test_a_divergence_names_float16_momentum_or_the_learning_rate(where, dtype, optimizer, momentum, cause, fix):
    config = cfg(dtype=dtype, optimizer=optimizer, momentum=momentum, lr=0.01)
    f = top(config, {"diverged_step": 7, "nonfinite_layer": "fc1", "nonfinite_in": where, "steps": 7},
            status="diverged")
    assert (f.cause, f.fix) == (cause, fix)
    assert f.title.startswith("Training diverged at step 7")
    assert "fc1" in f.detail


@pytest.mark.parametrize("stuck, expected", [(0.49, False), (0.5, True)])
def test_updates_that_round_away(stuck, expected):
    config = cfg(dtype="bfloat16", lr=1e-4, optimizer="sgd")
    found = named(config, {"median_stuck_update_frac": stuck, **PLATEAU})
    assert (c.ROUNDED_AWAY in found) is expected
    if expected:
        assert top(config, {"median_stuck_update_frac": stuck, **PLATEAU}).fix == {"dtype": "float32"}
    # in float32 the fix is a larger step
    f = top(cfg(lr=1e-9), {"median_stuck_update_frac": 0.9, **PLATEAU})
    assert (f.cause, f.fix) == (c.ROUNDED_AWAY, {"lr": 1e-8})


def test_an_optimizer_that_never_moved_is_named_without_the_median():
    f = top(cfg(), {"zero_update_steps": 40, "steps": 40})
    assert f.cause == c.ROUNDED_AWAY and f.severity == "problem"


@pytest.mark.parametrize("margin, cause", [(-16.0, c.HALF_SATURATION), (-16.6, c.SATURATION), (-300.0, c.SATURATION)])
def test_half_precision_saturation_is_judged_against_float32s_threshold(margin, cause):
    summary = {"peak_clamp_wrong_frac": 0.06, "min_margin": margin, **LEARNED}
    f = top(cfg(dtype="bfloat16"), summary)
    assert f.cause == cause
    assert f.fix == ({"dtype": "float32"} if cause == c.HALF_SATURATION else {"loss": "bce_with_logits"})
    assert f"{margin:.3g}" in f.detail


def test_saturation_needs_bce_and_a_wrong_side_clamp():
    assert c.SATURATION not in named(cfg(loss="bce_with_logits"), {"peak_clamp_wrong_frac": 0.2})
    assert c.SATURATION not in named(cfg(), {"peak_clamp_wrong_frac": 0.0})
    with_eps = top(cfg(clamp_eps=0.1), {"peak_clamp_wrong_frac": 0.2})
    assert with_eps.fix == {"loss": "bce_with_logits", "clamp_eps": None}


@pytest.mark.parametrize("frac, expected", [(0.0099, False), (0.01, True)])
def test_clamp_eps(frac, expected):
    assert (c.CLAMP_EPS in named(cfg(clamp_eps=0.2), {"peak_eps_clamp_frac": frac})) is expected


@pytest.mark.parametrize("changes, cause", [
    ({"bn_momentum": 0.0}, c.BN_FROZEN),
    ({"bn_momentum": 0.5, "batch_size": 64}, c.BN_MOMENTUM),
    ({"bn_momentum": 0.49, "batch_size": 64}, None),
    ({"batch_size": 4}, c.BN_TINY),
    ({"batch_size": 5}, None),
    ({"batch_size": 2, "batchnorm": False}, None),
])
def test_batchnorm_settings(changes, cause):
    config = cfg(**{"batchnorm": True, "hidden": (32,), **changes})
    summary = {"final_val_loss_logits": 3.0, "final_train_loss_logits": 0.2, "final_val_acc": 0.8,
               "final_train_acc": 0.95}
    found = [x for x in named(config, summary) if x.startswith("BatchNorm")]
    assert found == ([cause] if cause else [])
    if cause:
        assert "0.2 in training, 3 on validation" in top(config, summary).detail


@pytest.mark.parametrize("decay, summary, expected", [(0.1, PLATEAU, True), (0.099, PLATEAU, False),
                                                      (5.0, LEARNED, False)])
def test_weight_decay_is_blamed_for_a_plateau_only(decay, summary, expected):
    found = named(cfg(weight_decay=decay), summary)
    assert (c.WEIGHT_DECAY in found) is expected


@pytest.mark.parametrize("grad, expected", [(0.0099, False), (0.01, True)])
def test_clipping_too_tight(grad, expected):
    assert (c.CLIP in named(cfg(grad_clip=1e-3, optimizer="sgd"), {"median_grad_norm": grad, **PLATEAU})) is expected
    assert c.CLIP not in named(cfg(grad_clip=1e-3, optimizer="sgd"), {"median_grad_norm": 1.0, **LEARNED})
    # Adam's step m / sqrt(v) is the same whatever scale every gradient is clipped to: clipping is not its brake
    for optimizer in ("adam", "adamw"):
        assert c.CLIP not in named(cfg(grad_clip=1e-3, optimizer=optimizer), {"median_grad_norm": 1.0, **PLATEAU})


@pytest.mark.parametrize("momentum, expected", [(0.99, True), (0.98, False)])
def test_momentum_too_high_needs_sgd_and_swings(momentum, expected):
    summary = {**SWINGS, "median_update_ratio/out": 0.001}
    assert (c.MOMENTUM in named(cfg(optimizer="sgd", momentum=momentum), summary)) is expected
    assert c.MOMENTUM not in named(cfg(optimizer="adam", momentum=momentum), summary)
    assert c.MOMENTUM not in named(cfg(optimizer="sgd", momentum=momentum), {**SWINGS, "val_loss_osc": 0.5})


@pytest.mark.parametrize("ratio, margin, expected", [(0.05, -5.0, True), (0.049, -5.0, False),
                                                     (0.01, -20.0, True), (0.01, -19.9, False)])
def test_learning_rate_too_high_needs_swings_and_big_steps_or_wild_logits(ratio, margin, expected):
    summary = {**SWINGS, "median_update_ratio/fc0": ratio / 2, "median_update_ratio/out": ratio, "min_margin": margin}
    found = named(cfg(lr=1.0), summary)
    assert (c.LR_HIGH in found) is expected
    if expected:
        assert top(cfg(lr=1.0), summary).fix == {"lr": 0.1}
    assert c.LR_HIGH not in named(cfg(lr=1.0), {**summary, "val_loss_osc": 0.5})


@pytest.mark.parametrize("first, expected", [(0.0049, True), (0.0051, False)])
def test_vanishing_gradients_in_a_deep_stack(first, expected):
    config = cfg(hidden=(16,) * 4, activation="tanh")
    summary = {"median_grad_norm/fc0": first, "median_grad_norm/fc3": 0.05, "median_grad_norm/out": 0.1,
               "median_update_ratio/out": 0.01, **PLATEAU}
    assert (c.VANISHING in named(config, summary)) is expected
    assert c.VANISHING not in named(cfg(hidden=(16,) * 3, activation="tanh"), summary)
    assert c.VANISHING not in named(config, {**summary, **LEARNED})


@pytest.mark.parametrize("dead, expected", [(0.49, False), (0.5, True)])
def test_dead_relus_at_the_end(dead, expected):
    summary = {"final_dead_relu_frac": dead, "median_update_ratio/out": 0.01, **PLATEAU}
    assert (c.DEAD_RELU in named(cfg(), summary)) is expected
    assert c.DEAD_RELU not in named(cfg(activation="elu"), summary)
    if expected:
        assert top(cfg(), summary).fix == {"activation": "elu"}
        assert top(cfg(hidden_bias_init=-3.0), summary).fix == {"hidden_bias_init": None}
        assert top(cfg(), {**summary, **LEARNED}).severity == "warning"


@pytest.mark.parametrize("largest, expected, factor", [(0.00099, True, 10), (0.001, False, None),
                                                       (3e-5, True, 100)])
def test_learning_rate_too_low(largest, expected, factor):
    summary = {"median_update_ratio/fc0": largest / 10, "median_update_ratio/out": largest, **PLATEAU}
    found = findings_for(cfg(lr=0.001), summary, status="finished")
    low = [f for f in found if f.cause == c.LR_LOW]
    assert bool(low) is expected
    if expected:
        assert low[0].fix == {"lr": float(f"{0.001 * factor:.3g}")}
    assert c.LR_LOW not in named(cfg(lr=0.001), {**summary, **LEARNED})


@pytest.mark.parametrize("acc, expected", [(0.74, True), (0.75, False)])
def test_a_linear_model_or_no_activation_cannot_fit(acc, expected):
    summary = {"final_train_acc": acc, "median_update_ratio/out": 0.01, **PLATEAU}
    assert (c.LINEAR in named(cfg(hidden=(), dataset="xor"), summary)) is expected
    assert (c.NO_NONLINEARITY in named(cfg(activation="identity", dataset="xor"), summary)) is expected
    assert not {c.LINEAR, c.NO_NONLINEARITY} & set(named(cfg(dataset="xor"), summary))


@pytest.mark.parametrize("final, train_acc, severity", [(1.25, 0.95, "warning"), (1.249, 0.95, None),
                                                        (2.0, 0.95, "problem"), (2.0, 0.89, None)])
def test_overfitting(final, train_acc, severity):
    summary = {"best_val_loss": 1.0, "final_val_loss": final, "best_val_epoch": 3, "epochs_completed": 20,
               "final_train_acc": train_acc}
    found = [f for f in findings_for(cfg(), summary, status="finished") if f.cause == c.OVERFITTING]
    assert [f.severity for f in found] == ([severity] if severity else [])
    if severity:
        assert found[0].fix == {"epochs": 4}


@pytest.mark.parametrize("best, final, severity", [(0.001, 0.0509, None), (0.001, 0.0511, "warning"),
                                                   (0.05, 0.149, "warning"), (0.05, 0.1501, "problem")])
def test_overfitting_from_a_tiny_loss_needs_a_rise_in_nats_too(best, final, severity):
    summary = {"best_val_loss": best, "final_val_loss": final, "best_val_epoch": 3, "epochs_completed": 20,
               "final_train_acc": 1.0}
    found = [f for f in findings_for(cfg(), summary, status="finished") if f.cause == c.OVERFITTING]
    assert [f.severity for f in found] == ([severity] if severity else [])


@pytest.mark.parametrize("drop, fall, expected", [(0.03, 0.01, True), (0.029, 0.05, False), (0.1, 0.0099, False)])
def test_too_few_steps(drop, fall, expected):
    summary = {"val_loss_tail_drop": drop, "val_loss_tail_fall": fall, "steps": 8}
    found = findings_for(cfg(epochs=8), summary, status="finished")
    few = [f for f in found if f.cause == c.FEW_STEPS]
    assert bool(few) is expected
    if expected:
        assert few[0].fix == {"epochs": 80}


# ---------------------------------------------------------------------- precedence and shape
def test_causes_come_before_the_symptoms_they_explain():
    summary = {"input_std_max": 500.0, "input_abs_max": 4000.0, "peak_clamp_frac": 1.0, "peak_clamp_wrong_frac": 0.5,
               "peak_grad_vanish_frac": 0.5, "final_dead_relu_frac": 0.9, **PLATEAU}
    found = findings_for(cfg(dataset="breast_cancer", standardize=False), summary, status="finished")
    assert [f.cause for f in found[:3]] == [c.UNSCALED, c.SATURATION, c.DEAD_RELU]
    assert all(not f.cause for f in found[3:])


def test_every_rule_has_a_cause_in_the_list_and_every_fix_is_a_valid_config_change():
    assert len(set(c.CAUSES)) == len(c.CAUSES)
    base = ExperimentConfig(hidden=(16,) * 4, batchnorm=True, lr=0.01)
    summaries = [{"median_stuck_update_frac": 0.9, **PLATEAU}, {"peak_clamp_wrong_frac": 0.1, "min_margin": -3.0},
                 {**SWINGS, "median_update_ratio/out": 0.5}, {"final_dead_relu_frac": 1.0, **PLATEAU}]
    for summary in summaries:
        for config in (base.replace(dtype="bfloat16"), base.replace(bn_momentum=0.0), base):
            for f in findings_for(config.to_dict(), summary, status="finished"):
                if f.cause:
                    assert f.cause in c.CAUSES
                    assert f.severity in ("problem", "warning", "info")
                    config.replace(**f.fix)  # raises if the fix is not a valid change of this config


def test_a_swinging_validation_loss_falling_at_the_end_is_not_too_few_steps():
    summary = {"val_loss_tail_drop": 0.1, "val_loss_tail_fall": 0.05, "steps": 8}
    assert c.FEW_STEPS in named(cfg(), {**summary, "val_loss_osc": 0.29})
    assert c.FEW_STEPS not in named(cfg(), {**summary, "val_loss_osc": 0.3})


def test_steps_of_zero_are_not_a_low_learning_rate():
    """lr=50 threw the logits to 1e7, BCELoss's clamp zeroed every gradient and the weights stopped: the steps are
    zero, but raising the rate would not move them (and the rate proposed would be lower than the run's)."""
    zero = {"median_update_ratio/fc0": 0.0, "median_update_ratio/out": 0.0, "median_grad_norm": 0.0, **PLATEAU}
    assert c.LR_LOW not in named(cfg(lr=50.0), zero)
    assert c.LR_LOW not in named(cfg(lr=0.001), zero)
    small = {"median_update_ratio/out": 1e-5, "median_grad_norm": 0.1, **PLATEAU}
    assert c.LR_LOW in named(cfg(lr=0.001), small)
    assert c.LR_LOW not in named(cfg(lr=20.0), small)  # 10 is the most ever proposed: not a raise


FROZEN = {"peak_logit_abs_max": 2.1e7, "min_margin": -1.8e7, "median_grad_norm": 0.0, "train_loss_drop": -0.56,
          "input_std_max": 1.0, "peak_clamp_wrong_frac": 0.75, "median_update_ratio/fc0": 0.0,
          "final_train_loss_logits": 1.7e6, "steps": 125}


def test_steps_that_throw_the_logits_out_and_freeze_training_are_the_rate_or_the_momentum():
    """lr=50 (or momentum 0.99) on standardized inputs: logits of 1e7, then BCELoss's clamp zeroed every gradient.
    The root cause comes before the saturation it caused; the logits fix alone would diverge."""
    assert named(cfg(optimizer="sgd", lr=50.0), FROZEN)[:2] == [c.LR_HIGH, c.SATURATION]
    assert top(cfg(optimizer="sgd", lr=50.0), FROZEN).fix == {"lr": 5.0}
    assert top(cfg(optimizer="sgd", lr=10.0, momentum=0.99), FROZEN).fix == {"momentum": 0.9}
    assert named(cfg(optimizer="sgd", lr=10.0, momentum=0.99), FROZEN)[0] == c.MOMENTUM
    # each piece of evidence is needed: logits in a sensible range, a gradient left, a loss that fell
    for change in ({"peak_logit_abs_max": 9_999.0}, {"median_grad_norm": 0.01}, {"train_loss_drop": 0.0}):
        assert c.LR_HIGH not in named(cfg(optimizer="sgd", lr=50.0), {**FROZEN, **change})
    # unscaled inputs explain huge logits without a large step: that cause, not this one
    raw = {**FROZEN, "input_std_max": 600.0}
    assert named(cfg(optimizer="sgd", lr=50.0, standardize=False), raw)[0] == c.UNSCALED
    assert c.LR_HIGH not in named(cfg(optimizer="sgd", lr=50.0, standardize=False), raw)


# ---------------------------------------------------------------------- what a QA audit of the rules found
def test_a_wrong_side_clamp_costs_what_pytorch_charges_under_clamp_eps():
    import torch

    from core.experiment.losses import bce_loss

    for eps in (0.1, 1e-7):
        z, y = torch.tensor([20.0, -100.0]), torch.tensor([0.0, 1.0])  # saturated to 1 and to 0, both wrong
        charged = [float(v) for v in bce_loss(z, y, clamp_eps=eps, reduction="none")]  # 15.94, 16.12 for 1e-7
        f = top(cfg(loss="bce", clamp_eps=eps), {"peak_clamp_wrong_frac": 0.25, **LEARNED})
        cost = " to ".join(sorted({f"{v:.3g}" for v in charged}, key=float))
        assert f.cause == c.SATURATION and f"each costs {cost} and passes no gradient" in f.title
        assert f"such a prediction costs {cost}" in f.detail and "costs 100" not in f.detail
    assert cost == "15.9 to 16.1"  # float32 holds 1 - 1e-7 as 1 - 1.19e-7
    assert "each costs 100 and" in top(cfg(loss="bce"), {"peak_clamp_wrong_frac": 0.25, **LEARNED}).title
    # bfloat16 rounds 1 - 0.1 to 0.8984375: a negative at p = 1 costs -ln 0.1015625, as PyTorch charges it
    charged = float(bce_loss(torch.tensor([20.0], dtype=torch.bfloat16), torch.tensor([0.0], dtype=torch.bfloat16),
                             clamp_eps=0.1))
    f = top(cfg(loss="bce", clamp_eps=0.1, dtype="bfloat16"), {"peak_clamp_wrong_frac": 0.25, **LEARNED})
    assert f"{charged:.3g}" == "2.28" and "each costs 2.28 to 2.3 " in f.title


def test_frozen_logits_quote_the_dtypes_own_saturation_point():
    summary = {"peak_logit_abs_max": 2e5, "median_grad_norm": 0.0, "train_loss_drop": -0.4, **PLATEAU}
    summary["train_loss_drop"] = -0.4
    assert "sigmoid saturates at 6.25 in bfloat16" in top(cfg(dtype="bfloat16", loss="bce"), summary).detail
    assert "sigmoid saturates at 16.6 in float32" in top(cfg(loss="bce"), summary).detail


THROWN = {"val_loss_osc": 0.0, "train_loss_osc": 0.0, "train_loss_drop": 0.99, "min_margin": -2.8e6,
          "peak_logit_abs_max": 3.8e6, "median_update_ratio/out": 0.055, "final_val_loss_logits": 521.7,
          "val_loss_tail_drop": 0.41, "val_loss_tail_fall": 100.0, "steps": 125}


def test_a_learning_rate_so_high_the_loss_only_falls_from_absurd_heights():
    # Adam at lr 90: no swing, the loss falls every epoch, from logits in the millions; it ends worse than 0.5
    config = cfg(optimizer="adam", lr=90.0, loss="bce_with_logits", hidden=(32,))
    f = top(config, THROWN)
    assert (f.cause, f.fix) == (c.LR_HIGH, {"lr": 9.0})
    assert "ended at 522, worse than predicting 0.5 for every sample (0.693)" in f.title
    assert c.FEW_STEPS not in named(config, THROWN)  # more epochs at lr 90 is no fix
    # below ln 2 the same steps are not blamed without a swing; nor without the wild logits
    assert c.LR_HIGH not in named(config, {**THROWN, "final_val_loss_logits": 0.6})
    assert c.LR_HIGH not in named(config, {**THROWN, "min_margin": -5.0})


def test_an_imbalanced_run_that_only_predicts_the_larger_class():
    import math

    summary = {"final_val_acc": 0.875, "final_val_auc": 0.494, "val_pos_frac": 0.125, "final_train_acc": 0.906,
               "final_val_loss_logits": 0.382, "final_val_pred_pos_rate": 0.0, **LEARNED}
    # circles with no hidden layer: a straight line cannot do better than the prior
    f = top(cfg(dataset="circles", hidden=(), pos_fraction=0.1), summary)
    assert (f.cause, f.fix) == (c.MAJORITY, {"hidden": [32]})
    assert f.title == ("The model does no better than always predicting negative: validation accuracy 87.5% "
                       "against 87.5% negative samples, AUC 0.494 (0.5 is chance).")
    prior = -(0.125 * math.log(0.125) + 0.875 * math.log(0.875))
    assert f"is above the {prior:.3g} of predicting the positive share" in f.detail
    # gaussian data whose label noise flips as many labels as there are positives
    f = top(cfg(dataset="gaussian", hidden=(32,), pos_fraction=0.05, noise=0.05),
            {**summary, "val_pos_frac": 0.085, "final_val_acc": 0.92, "final_val_auc": 0.52})
    assert (f.cause, f.fix) == (c.MAJORITY, {"noise": 0.0})
    assert f"about {0.05 * 0.95 / 0.085:.0%} of the positive labels are flipped ones" in f.detail
    # no "good" beside it, though the accuracy is 87.5%; and a run that ranks well is not blamed
    assert all(f.severity != "good" for f in findings_for(cfg(dataset="circles", hidden=()), summary,
                                                          status="finished"))
    assert c.MAJORITY not in named(cfg(), {**summary, "final_val_auc": 0.9})
    assert c.MAJORITY not in named(cfg(), {**summary, "final_val_acc": 0.9})
    assert c.MAJORITY not in named(cfg(), {**summary, "val_pos_frac": 0.35, "final_val_acc": 0.65})  # balanced
    good = findings_for(cfg(), {**summary, "final_val_acc": 0.95, "final_val_auc": 0.97}, status="finished")
    assert good[-1].severity == "good"


def test_random_labels_are_not_also_blamed_on_a_linear_model():
    summary = {"final_train_acc": 0.6, "final_val_auc": 0.5, **PLATEAU}
    assert named(cfg(dataset="random", hidden=()), summary) == [c.RANDOM_LABELS]
    assert c.LINEAR in named(cfg(dataset="circles", hidden=()), summary)
