import math

import numpy as np
import pytest
import torch

from sklearn.metrics import roc_auc_score

from core.experiment.config import ExperimentConfig, preset
from core.experiment.data import load_dataset
from core.experiment.models import build_model
from core.training.reporting import MemoryReporter
from core.training.trainer import batch_slices, resolve_device, train

REQUIRED_STEP_KEYS = {"train_loss", "train_loss_logits", "clamp_frac", "clamp_wrong_frac", "grad_vanish_frac",
                      "logit_mean", "logit_std", "logit_abs_max", "pred_pos_rate", "grad_norm", "update_norm", "lr"}
REQUIRED_EPOCH_KEYS = {"val_loss", "val_loss_logits", "val_acc", "val_auc", "val_pred_pos_rate", "train_acc"}


def run(cfg, **kw):
    rep = MemoryReporter()
    result = train(cfg, rep, device=torch.device("cpu"), **kw)
    return rep, result


def test_model_is_built_from_config_and_outputs_one_value_per_sample():
    model = build_model(ExperimentConfig(hidden=(8, 4), batchnorm=True, activation="elu", elu_alpha=0.5), 3)
    assert model(torch.randn(5, 3)).shape == (5,)
    assert model.layer_names() == ["fc0", "bn0", "fc1", "bn1", "out"]
    bn = model.hidden[0].bn
    assert bn.eps == 1e-5 and bn.momentum == 0.1
    assert model.hidden[0].act.alpha == 0.5


def test_short_cpu_fit_reduces_the_loss():
    rep, result = run(ExperimentConfig(dataset="moons", hidden=(16,), epochs=5, lr=0.02))
    losses = rep.series("val_loss")
    assert result.status == "finished"
    assert losses[-1] < losses[0] * 0.8


def test_every_contract_key_is_recorded():
    rep, result = run(ExperimentConfig(hidden=(8, 8), batchnorm=True, epochs=2, clamp_eps=1e-4))
    keys = rep.keys()
    assert REQUIRED_STEP_KEYS | REQUIRED_EPOCH_KEYS | {"eps_clamp_frac", "dead_relu_frac"} <= keys
    assert {"grad_norm/fc0", "grad_norm/bn0", "grad_norm/fc1", "grad_norm/out"} <= keys
    assert {"bn_min_running_var/bn0", "bn_max_abs_running_mean/bn1"} <= keys
    assert rep.info.device == "cpu" and rep.info.torch_version == torch.__version__
    steps = [r.step for r in rep.rows if r.key == "train_loss"]
    assert steps == list(range(1, result.summary["steps"] + 1))
    assert len(rep.series("val_loss")) == 2
    assert result.summary["best_val_loss"] == min(rep.series("val_loss"))


def test_train_loss_matches_logits_loss_when_nothing_saturates():
    rep, _ = run(ExperimentConfig(epochs=1, hidden=(4,)))
    for a, b in zip(rep.series("train_loss"), rep.series("train_loss_logits")):
        assert a == pytest.approx(b, rel=1e-4)


def test_article_relu_sigmoid_predicts_positive_throughout_while_the_fix_learns():
    rep, floored = run(preset("article-relu-sigmoid"))
    assert set(rep.series("pred_pos_rate")) == {1.0}
    assert set(rep.series("val_pred_pos_rate")) == {1.0}
    assert min(rep.series("train_loss")) > 0.3  # the ln 2 floor on negatives keeps the mean loss up
    fixed, result = run(preset("article-fixed"))
    assert result.summary["final_val_acc"] > 0.9
    assert min(fixed.series("pred_pos_rate")) < 0.9
    assert result.summary["final_val_loss"] < floored.summary["final_val_loss"] - 0.1


def test_article_example_has_nothing_to_learn():
    rep, result = run(preset("article-example"))
    assert result.status == "finished"
    assert set(rep.series("pred_pos_rate")) == {1.0}
    assert 0.3 < result.summary["final_val_auc"] < 0.7  # random labels


def test_saturating_bce_clamps_wrong_predictions():
    rep, result = run(preset("saturating-bce"))
    assert result.summary["peak_clamp_wrong_frac"] > 0.05
    assert result.summary["peak_grad_vanish_frac"] > 0.05
    # where outputs are clamped on the wrong side, the optimised loss is far from the exact one
    gaps = [a - b for a, b in zip(rep.series("train_loss"), rep.series("train_loss_logits"))]
    assert max(abs(g) for g in gaps) > 1.0


def test_divergent_run_stops_with_status_and_step():
    rep, result = run(ExperimentConfig(optimizer="sgd", lr=90.0, loss="bce_with_logits", hidden=(64, 64), epochs=5))
    assert result.status == "diverged"
    step = result.summary["diverged_step"]
    assert step is not None and f"step {step}" in result.error
    assert max(r.step for r in rep.rows) == step  # nothing reported past the bad step
    bad = [r for r in rep.rows if r.step == step and r.key == "train_loss"][0]
    assert not math.isfinite(bad.value) or any(
        not math.isfinite(r.value) for r in rep.rows if r.step == step and r.key in ("logit_abs_max", "grad_norm"))


def test_nan_logits_with_bce_end_as_diverged_not_a_crash():
    # Adam in float16: eps=1e-8 rounds to 0, the update divides by zero and the weights become NaN. The NaN
    # logits then reach the sigmoid + BCELoss path, which in plain PyTorch raises on NaN input.
    rep, result = run(ExperimentConfig(optimizer="adam", dtype="float16", loss="bce", epochs=2))
    assert result.status == "diverged", result.error
    assert "BCELoss" not in (result.error or "")


def test_frozen_weights_show_zero_updates_with_nonzero_gradients():
    # lr so small that p - lr * g rounds back to p in float32: the optimizer changes nothing.
    rep, result = run(ExperimentConfig(optimizer="sgd", lr=1e-30, epochs=1, hidden=(4,)))
    assert set(rep.series("update_norm")) == {0.0}
    assert min(rep.series("grad_norm")) > 0
    assert result.summary["zero_update_steps"] == result.summary["steps"]


def test_cancel_request_stops_the_run():
    rep = MemoryReporter(stop_after_flushes=1)
    result = train(ExperimentConfig(epochs=50), rep, device=torch.device("cpu"), flush_every_steps=10)
    assert result.status == "cancelled"
    assert result.summary["steps"] < 50 * 25


def test_loss_only_diagnostics_and_log_every():
    rep, _ = run(ExperimentConfig(diagnostics="loss", epochs=1))
    assert {r.key for r in rep.rows if r.key.startswith("train_")} == {"train_loss", "train_acc"}
    rep, result = run(ExperimentConfig(log_every=5, epochs=1))
    assert [r.step for r in rep.rows if r.key == "train_loss"] == list(range(1, result.summary["steps"] + 1, 5))


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_other_dtypes_train(dtype):
    _, result = run(ExperimentConfig(dtype=dtype, epochs=2, hidden=(8,), batchnorm=True))
    assert result.status == "finished", result.error


def test_batchnorm_trailing_batch_of_one_is_dropped():
    assert [s.stop - s.start for s in batch_slices(65, 32, batchnorm=True)] == [32, 32]
    assert [s.stop - s.start for s in batch_slices(65, 32, batchnorm=False)] == [32, 32, 1]
    # 81 training samples with batch 16: the last batch has one sample and BatchNorm would raise on it.
    _, result = run(ExperimentConfig(n_samples=101, val_fraction=0.2, batch_size=16, batchnorm=True, epochs=1))
    assert result.status == "finished", result.error


def test_dry_run_takes_one_step():
    rep, result = run(ExperimentConfig(), max_steps=1)
    assert result.summary["steps"] == 1 and result.status == "finished"


def test_missing_device_is_an_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda", cuda_available=lambda: False)
    assert resolve_device("auto", cuda_available=lambda: False, mps_available=lambda: False).type == "cpu"


@pytest.mark.parametrize("cfg", [ExperimentConfig(hidden=(8, 8), batchnorm=True, epochs=2, optimizer="adam"),
                                 ExperimentConfig(hidden=(8,), epochs=2, optimizer="sgd", momentum=0.9,
                                                  grad_clip=0.5)])
def test_diagnostics_do_not_change_training(cfg):
    # Full diagnostics move the parameters into flat buffers; the losses must be the very same numbers.
    full, _ = run(cfg)
    bare, _ = run(cfg.replace(diagnostics="loss"))
    assert full.series("train_loss") == bare.series("train_loss")
    assert full.series("val_loss") == bare.series("val_loss")


def test_grad_norm_is_measured_before_clipping():
    rep, _ = run(ExperimentConfig(hidden=(8,), epochs=1, grad_clip=1e-3, optimizer="sgd"))
    assert max(rep.series("grad_norm")) > 1e-2


def _values(rows):
    return sorted((r.key, r.step, r.epoch, r.value) for r in rows)


@pytest.mark.parametrize("diagnostics", ["full", "loss"])
def test_reported_values_do_not_depend_on_when_the_trainer_flushes(diagnostics):
    # Flushing every 3 steps splits the 8-step epochs across windows; one flush at the end holds all 4 epochs.
    cfg = ExperimentConfig(hidden=(8, 8), batchnorm=True, epochs=4, n_samples=300, diagnostics=diagnostics)
    often, _ = run(cfg, flush_every_steps=3)
    rarely, _ = run(cfg, flush_every_s=1e9)
    assert rarely.info.total_steps == 32
    assert rarely.flushes == 1 and often.flushes == 32 // 3 + 1
    a, b = _values(often.rows), _values(rarely.rows)
    assert [r[:3] for r in a] == [r[:3] for r in b]
    # vectorised reductions over windows of different sizes may round the last bit differently
    assert [r[3] for r in a] == pytest.approx([r[3] for r in b], rel=1e-6, abs=1e-9)
    assert {"bn_min_running_var/bn1", "train_acc", "val_auc"} <= often.keys()


def test_train_acc_is_the_positive_share_when_every_prediction_is_positive():
    # The article's ReLU before the sigmoid makes every z >= 0: each prediction is "positive", so the training
    # accuracy of an epoch is exactly the share of positives in the training split.
    cfg = preset("article-relu-sigmoid")
    rep, _ = run(cfg)
    y = load_dataset(cfg).y_train
    assert set(rep.series("pred_pos_rate")) == {1.0}
    assert rep.series("train_acc") == [pytest.approx(float(y.mean()), abs=1e-12)] * cfg.epochs


@pytest.mark.parametrize("cfg", [
    ExperimentConfig(hidden=(8,), loss="bce", clamp_eps=1e-3, pos_weight=2.0, epochs=2),
    ExperimentConfig(hidden=(8,), loss="bce_with_logits", pos_weight=3.0, epochs=2, diagnostics="loss"),
])
def test_validation_metrics_equal_pytorch_on_the_same_model(cfg):
    # lr so small that the weights never move: the model at every epoch end is the one built from the seed.
    cfg = cfg.replace(optimizer="sgd", lr=1e-30)
    rep, _ = run(cfg)
    data = load_dataset(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.n_features).eval()
    x, y = torch.as_tensor(data.x_val, dtype=torch.float32), torch.as_tensor(data.y_val, dtype=torch.float32)
    with torch.no_grad():
        z = model(x)
    w = 1 + (cfg.pos_weight - 1) * y
    if cfg.loss == "bce":
        expected = torch.nn.BCELoss(weight=w)(torch.sigmoid(z).clamp(cfg.clamp_eps, 1 - cfg.clamp_eps), y)
    else:
        expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(cfg.pos_weight))(z, y)
    exact = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(cfg.pos_weight))(z, y)
    assert rep.series("val_loss") == [pytest.approx(expected.item(), rel=1e-6)] * 2
    assert rep.series("val_loss_logits") == [pytest.approx(exact.item(), rel=1e-6)] * 2
    assert rep.series("val_acc") == [pytest.approx(((z >= 0).float() == y).float().mean().item())] * 2
    assert rep.series("val_pred_pos_rate") == [pytest.approx((z >= 0).float().mean().item())] * 2
    assert rep.series("val_auc") == [pytest.approx(roc_auc_score(data.y_val, z.numpy()))] * 2


@pytest.mark.parametrize("log_every", [1, 3])
def test_sgd_update_norm_is_lr_times_grad_norm(log_every):
    # Plain SGD moves the parameters by exactly lr * gradient, so the logged update norm is lr * grad_norm;
    # with log_every=3 the two unlogged steps in between must not leak into the next logged update.
    cfg = ExperimentConfig(hidden=(8,), optimizer="sgd", lr=0.05, momentum=0.0, epochs=2, log_every=log_every)
    rep, _ = run(cfg)
    grad, update = rep.series("grad_norm"), rep.series("update_norm")
    assert len(update) > 10
    assert update == pytest.approx([cfg.lr * g for g in grad], rel=1e-2)


def test_training_leaves_the_garbage_collector_as_it_found_it():
    import gc

    before = gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()
    run(ExperimentConfig(epochs=1))
    run(ExperimentConfig(epochs=1, lr=-1.0))  # refused by validation: a failed run restores it too
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before


def test_dead_relu_frac_per_step_equals_the_batches_own_relu_outputs():
    # Frozen weights (lr 1e-30) and the trainer's own batch order: every step's dead share can be recomputed
    # from the model built from the seed, batch by batch, with the one-batch function.
    from core.training.diagnostics import dead_relu_frac
    from core.training.trainer import batch_slices

    cfg = ExperimentConfig(hidden=(6, 5), optimizer="sgd", lr=1e-30, epochs=2, n_samples=200, batch_size=16,
                           output_relu=True)
    rep, _ = run(cfg, flush_every_steps=7)
    data = load_dataset(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.n_features)
    model.record = True
    x = torch.as_tensor(data.x_train, dtype=torch.float32)
    gen = torch.Generator().manual_seed(cfg.seed)
    expected = []
    with torch.no_grad():
        for _ in range(cfg.epochs):
            order = torch.randperm(len(x), generator=gen)
            for sl in batch_slices(len(x), cfg.batch_size, batchnorm=False):
                z = model(x[order[sl]])
                expected.append(dead_relu_frac(list(model.relu_outputs), z).item())
    assert 0 < max(expected)  # the case tests something: some unit is dead on some batch
    assert rep.series("dead_relu_frac") == pytest.approx(expected)


def _replica(cfg):
    """Each step's (loss, all logits finite) from a replica of the trainer's loop: same seed, batches and
    optimizer, moving weights, plain PyTorch."""
    from core.experiment.losses import loss_fn
    from core.training.trainer import DTYPES, make_optimizer

    data = load_dataset(cfg)
    dtype = DTYPES[cfg.dtype]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.n_features).to(dtype=dtype)
    opt = make_optimizer(cfg, list(model.parameters()))
    compute = loss_fn(cfg)
    x = torch.as_tensor(data.x_train, dtype=dtype)
    y = torch.as_tensor(data.y_train, dtype=dtype)
    slices = batch_slices(len(y), cfg.batch_size, batchnorm=cfg.batchnorm)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen)
        for sl in slices:
            z = model(x[order[sl]])
            loss = compute(z, y[order[sl]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps.append((loss.item(), bool(torch.isfinite(z).all())))
    return steps, slices


@pytest.mark.parametrize("cfg", [
    ExperimentConfig(hidden=(8,), loss="bce", clamp_eps=1e-4, pos_weight=2.0, epochs=2, n_samples=230,
                     batch_size=32),
    ExperimentConfig(hidden=(8,), loss="bce_with_logits", epochs=2, n_samples=230, batch_size=32, log_every=3,
                     diagnostics="loss"),
    ExperimentConfig(hidden=(), loss="bce", output_relu=True, epochs=2, n_samples=230, batch_size=32,
                     dtype="float64", optimizer="sgd", lr=0.5),
])
def test_train_loss_is_the_loss_each_step_backpropagated(cfg):
    # The trainer keeps each step's loss tensor and fetches a window's at once; the split's last batch is smaller
    # than the others (230 * 0.8 = 184 = 5 * 32 + 24), and windows of 4 steps cut across epochs.
    rep, _ = run(cfg, flush_every_steps=4)
    steps, slices = _replica(cfg)
    assert len({s.stop - s.start for s in slices}) == 2
    # values reach the host as float32, whatever the compute dtype
    assert rep.series("train_loss") == pytest.approx([loss for loss, _ in steps][::cfg.log_every], rel=1e-6)


@pytest.mark.parametrize("diagnostics", ["loss", "full"])
def test_divergence_is_reported_at_the_first_step_with_non_finite_logits(diagnostics):
    # Adam in float16 turns the weights to NaN; BCELoss on clamped probabilities keeps the loss itself finite, so
    # only the logits show it. The run must stop at that very step, in the middle of a 7-step window.
    cfg = ExperimentConfig(optimizer="adam", dtype="float16", loss="bce", clamp_eps=1e-3, epochs=2,
                           diagnostics=diagnostics)
    rep, result = run(cfg, flush_every_steps=7)
    steps, _ = _replica(cfg)
    first = next(i for i, (_, finite) in enumerate(steps) if not finite) + 1
    assert first % 7 != 0  # the bad step is not a window's last
    assert result.status == "diverged" and result.summary["diverged_step"] == first
    assert max(r.step for r in rep.rows) == first


def test_validate_is_eval_mode_for_batchnorm_and_leaves_the_model_training():
    from core.training.trainer import validate

    cfg = ExperimentConfig(hidden=(6, 5), batchnorm=True)
    torch.manual_seed(0)
    model = build_model(cfg, 4)
    x = torch.randn(64, 4)
    model(x * 3 + 1)  # a training-mode pass moves the running statistics away from (0, 1)
    assert [type(m) for m in model.mode_layers()] == [torch.nn.BatchNorm1d] * 2
    z = validate(model, x, model.mode_layers())
    assert all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():
        expected = model(x)
    model.train()
    with torch.no_grad():
        batch_stats = model(x)
    assert torch.equal(z, expected) and not torch.allclose(z, batch_stats)


# ---------------------------------------------------------------------- the measurements behind the causes
def test_the_summary_holds_what_the_causes_read():
    rep, result = run(ExperimentConfig(hidden=(8, 8), epochs=3, n_samples=300))
    s = result.summary
    for key in ("median_grad_norm", "median_grad_norm/fc0", "median_grad_norm/out", "median_update_ratio/fc0",
                "median_update_ratio/out", "median_stuck_update_frac", "min_margin", "min_val_logit",
                "max_val_logit", "final_val_ece", "train_loss_drop", "train_loss_osc", "val_loss_osc",
                "val_loss_tail_drop", "loss_spikes", "val_pos_frac", "final_dead_relu_frac"):
        assert key in s, key
    assert {"update_ratio/fc0", "update_ratio/out", "stuck_update_frac", "margin_min", "val_ece",
            "val_logit_min", "val_logit_max"} <= rep.keys()
    assert s["min_margin"] == min(rep.series("margin_min"))
    assert s["min_val_logit"] <= s["max_val_logit"]
    assert 0 < s["median_update_ratio/fc0"] < 1 and s["median_stuck_update_frac"] == 0.0
    assert s["final_val_ece"] == rep.series("val_ece")[-1]
    curve = s["calibration"]
    assert sum(curve["count"]) == 60 and len(curve["predicted"]) == len(curve["observed"])


def test_sgd_update_ratio_is_the_step_over_the_weights():
    # logistic regression, SGD without momentum: the step of every logged step is lr * gradient
    rep, _ = run(ExperimentConfig(hidden=(), optimizer="sgd", lr=0.1, epochs=1, n_samples=100))
    for g, u, r in zip(rep.series("grad_norm"), rep.series("update_norm"), rep.series("update_ratio/out")):
        assert u == pytest.approx(0.1 * g, rel=1e-4)
        assert 0 < r < 1


def test_bfloat16_updates_that_round_away_are_counted():
    _, result = run(ExperimentConfig(dtype="bfloat16", optimizer="sgd", lr=1e-5, epochs=1, n_samples=200))
    assert result.summary["median_stuck_update_frac"] > 0.5


def test_a_divergence_says_where_the_first_non_finite_value_came_from():
    _, result = run(ExperimentConfig(optimizer="sgd", lr=90.0, loss="bce_with_logits", hidden=(64, 64), epochs=5))
    assert result.status == "diverged"
    assert result.summary["nonfinite_in"] in ("forward", "gradient", "update")
    assert result.summary["nonfinite_layer"] in ("fc0", "act0", "fc1", "act1", "out", "input")


def test_adam_in_float16_is_traced_to_the_update_that_divided_by_zero():
    # PyTorch itself: Adam's first float16 step divides m by sqrt(v) + eps where eps (1e-8) and 0.001 * g**2 of
    # a small gradient round to 0, so the weights become infinite while every gradient is finite
    import torch

    weight = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    weight.grad = torch.tensor([1e-3, 0.1], dtype=torch.float16)
    torch.optim.Adam([weight], lr=1e-3).step()
    assert not torch.isfinite(weight[0]) and torch.isfinite(weight[1])

    from core.analysis import causes
    from core.analysis.findings import findings_for

    cfg = ExperimentConfig(optimizer="adam", dtype="float16", loss="bce_with_logits", hidden=(32,), lr=1e-3, epochs=2)
    rep, result = run(cfg)
    assert result.status == "diverged"
    step = result.summary["diverged_step"]
    grads = [r.value for r in rep.rows if r.key == "grad_norm" and r.step < step]
    assert grads and all(math.isfinite(g) for g in grads)  # finite gradients up to the bad step ...
    assert any(not math.isfinite(r.value) for r in rep.rows if r.key == "update_norm" and r.step < step)  # ... an
    # infinite update before it: the weights were already infinite when the bad step's forward pass ran
    assert result.summary["nonfinite_in"] == "update" and result.summary["nonfinite_layer"] in ("fc0", "out")
    top = findings_for(cfg.to_dict(), result.summary, status="diverged")[0]
    assert (top.cause, top.fix) == (causes.FLOAT16_ADAM, {"dtype": "float32"})


def test_bceloss_in_float16_is_traced_to_the_gradient_of_a_confident_output():
    # PyTorch itself: in float16 sigmoid(9) rounds to exactly 1, and BCELoss's backward divides by p(1 - p), its
    # 1e-12 guard 0 in float16: a confident output's gradient is NaN whether it is right or wrong; float32 and
    # the logits loss give finite ones
    import torch

    for y in (0.0, 1.0):
        z = torch.tensor([9.0], dtype=torch.float16, requires_grad=True)
        p = torch.sigmoid(z)
        assert p.item() == 1.0
        torch.nn.BCELoss()(p, torch.tensor([y], dtype=torch.float16)).backward()
        assert torch.isnan(z.grad).all()
        for dtype, loss in ((torch.float32, "bce"), (torch.float16, "logits")):
            z = torch.tensor([9.0], dtype=dtype, requires_grad=True)
            target = torch.tensor([y], dtype=dtype)
            (torch.nn.BCELoss()(torch.sigmoid(z), target) if loss == "bce"
             else torch.nn.BCEWithLogitsLoss()(z, target)).backward()
            assert torch.isfinite(z.grad).all()

    from core.analysis import causes
    from core.analysis.findings import findings_for

    cfg = ExperimentConfig(dtype="float16", optimizer="sgd", lr=0.3, noise=0.0, hidden=(32,), n_samples=500, epochs=15)
    _, result = run(cfg)
    assert result.status == "diverged" and result.summary["nonfinite_in"] == "gradient"
    top = findings_for(cfg.to_dict(), result.summary, status="diverged")[0]
    assert (top.cause, top.fix) == (causes.FLOAT16_OVERFLOW, {"dtype": "float32"})
    assert "above z ≈ 8.3" in top.detail and "loss=bce_with_logits" in top.detail
    assert run(cfg.replace(dtype="float32"))[1].status == "finished"  # the fix the finding proposes
    assert run(cfg.replace(loss="bce_with_logits"))[1].status == "finished"  # and the other it names


def test_feature_scale_and_hidden_bias_init():
    scaled = load_dataset(ExperimentConfig(feature_scale=1000.0, standardize=False))
    plain = load_dataset(ExperimentConfig(standardize=False))
    assert scaled.x_train == pytest.approx(1000.0 * plain.x_train)
    assert load_dataset(ExperimentConfig(feature_scale=1000.0)).x_train == pytest.approx(
        load_dataset(ExperimentConfig()).x_train)  # standardize undoes it
    model = build_model(ExperimentConfig(hidden=(4, 4), hidden_bias_init=-3.0), 2)
    assert all((block.fc.bias == -3.0).all() for block in model.hidden)
    _, result = run(ExperimentConfig(hidden=(8,), hidden_bias_init=-5.0, epochs=2, n_samples=200))
    assert result.summary["final_dead_relu_frac"] == 1.0


def test_the_summary_keeps_an_even_sample_of_a_long_run(monkeypatch):
    from core.training import summary as summary_module

    monkeypatch.setattr(summary_module, "MAX_SAMPLES", 10)
    s = summary_module.Summary()
    for start in range(0, 40, 8):  # five flushes of 8 logged steps: 0..39
        s.add_columns({"grad_norm": [float(v) for v in range(start, start + 8)]}, [0] * 8)
    kept = list(s.samples["grad_norm"])
    assert len(kept) <= 10 and kept == [float(v) for v in range(0, 40, s.stride)]
    assert s.as_dict(steps=40, epochs=1, diverged_step=None)["median_grad_norm"] == pytest.approx(18.0, abs=2)


def test_summaries_on_different_strides_are_summarised_together_as_alone(monkeypatch):
    """`Summary.add_many` cuts every run's samples of a batch from one array when the runs' samples fall at the
    same steps; runs that have thinned their samples differently (one had more steps before) take each its own:
    either way each run keeps what `add_columns` of its own rows keeps, and thins when it passes MAX_SAMPLES."""
    from core.training import summary as summary_module

    monkeypatch.setattr(summary_module, "MAX_SAMPLES", 10)
    many = [summary_module.Summary() for _ in range(3)]
    one = [summary_module.Summary() for _ in range(3)]
    for s in (many[1], one[1]):  # run 1 ahead by 13 steps: its stride is 2 when the others' is 1
        s.add_columns({"grad_norm": [float(-v) for v in range(13)]}, [0] * 13)
    for start in range(0, 40, 8):
        cols = {"grad_norm": np.array([[float(100 * i + v) for v in range(start, start + 8)] for i in range(3)])}
        summary_module.Summary.add_many(many, cols, [0] * 8)
        for i, s in enumerate(one):
            s.add_columns({"grad_norm": cols["grad_norm"][i].tolist()}, [0] * 8)
    assert [s.stride for s in many] == [s.stride for s in one] and many[1].stride != many[0].stride
    for a, b in zip(many, one):
        assert list(a.samples["grad_norm"]) == list(b.samples["grad_norm"]) and a.sampled_steps == b.sampled_steps
        assert len(a.samples["grad_norm"]) <= 10


def test_summary_add_many_is_add_columns_of_each_run():
    """A population's flush summarises its members together (`Summary.add_many`); each summary must be what the
    single-run `add_columns` makes of that member's own columns, over several flushes: finals, peaks and lows
    past NaN and infinities, sampled medians, per-epoch training-loss sums (a non-finite loss left out, an epoch
    split across flushes), the best validation loss (ties: the first; NaN never best), zero updates, and keys
    only some runs have."""
    from core.training.summary import Summary

    gen = np.random.default_rng(4)
    runs, n = 5, 12
    many = [Summary() for _ in range(runs)]
    one = [Summary() for _ in range(runs)]
    seen, seen_val = [], []
    for flush in range(3):
        epochs = [flush] * 6 + [flush + 1] * 6
        cols = {key: gen.normal(size=(runs, n)) for key in ("train_loss_logits", "grad_norm", "update_norm",
                                                               "clamp_frac", "margin_min", "pred_pos_rate",
                                                               "update_ratio/fc0", "logit_std")}
        cols["train_loss_logits"] = np.abs(cols["train_loss_logits"])
        cols["train_loss_logits"][1, 3] = math.nan
        cols["train_loss_logits"][2, :6] = math.inf  # an epoch of this flush with no finite loss
        cols["clamp_frac"][0] = math.nan  # nothing finite: no peak from this flush
        cols["margin_min"][3, 2] = -math.inf
        cols["update_norm"][:, ::4] = 0.0
        cols["grad_norm"][:, ::8] = -1.0
        has = {"update_ratio/fc0": np.array([True, False, True, False, True])}
        cols["update_ratio/fc0"][~has["update_ratio/fc0"]] = math.nan
        val = {"val_loss": np.array([[0.5, 0.4, 0.4, math.nan]] * runs) + np.arange(runs)[:, None] * 0.1,
               "val_loss_logits": gen.normal(size=(runs, 4)), "val_acc": gen.uniform(size=(runs, 4))}
        val["val_acc"][4, 1] = math.nan
        val_epochs = [4 * flush + j for j in range(4)]
        Summary.add_many(many, cols, epochs, has)
        Summary.add_many(many, val, val_epochs)
        seen.append((cols, epochs))
        seen_val.append(val["val_acc"])
        for i, s in enumerate(one):
            s.add_columns({key: v[i].tolist() for key, v in cols.items() if key not in has or has[key][i]}, epochs)
            s.add_columns({key: v[i].tolist() for key, v in val.items()}, val_epochs)
    for a, b in zip(many, one):
        got, want = a.as_dict(steps=36, epochs=3, diverged_step=None), b.as_dict(steps=36, epochs=3,
                                                                                   diverged_step=None)
        assert list(got) == list(want)
        assert all(got[k] == want[k] or (got[k] != got[k] and want[k] != want[k]) for k in want), (got, want)
        assert a.train_by_epoch == b.train_by_epoch
        assert np.array_equal(a.step_losses, b.step_losses, equal_nan=True)
        assert list(a.final) == list(b.final) and list(a.peak) == list(b.peak)  # a partial key only where it is
        assert np.array_equal(list(a.final.values()), list(b.final.values()), equal_nan=True)
    # and what each run's summary holds, by hand from its raw values (plain loops)
    for i, s in enumerate(many):
        losses = [(e, v) for flush_cols, flush_epochs in seen for e, v in
                  zip(flush_epochs, flush_cols["train_loss_logits"][i].tolist())]
        want_sums: dict[int, list] = {}
        for e, v in losses:
            if math.isfinite(v):
                acc = want_sums.setdefault(e, [0.0, 0])
                acc[0] += v
                acc[1] += 1
        assert s.train_by_epoch == want_sums
        for key in ("clamp_frac", "pred_pos_rate"):
            finite = [v for flush_cols, _ in seen for v in flush_cols[key][i].tolist() if math.isfinite(v)]
            assert s.peak.get(key) == (max(finite) if finite else None)  # run 0's clamp_frac: NaN only
        finite = [v for flush_cols, _ in seen for v in flush_cols["margin_min"][i].tolist() if math.isfinite(v)]
        assert s.lowest["margin_min"] == min(finite) and s.final["grad_norm"] == seen[-1][0]["grad_norm"][i, -1]
        zero = sum(1 for flush_cols, _ in seen for g, u in zip(flush_cols["grad_norm"][i], flush_cols["update_norm"][i])
                   if u == 0.0 and g > 0.0)
        assert s.zero_update_steps == zero
        norms = [v for flush_cols, _ in seen for v in flush_cols["grad_norm"][i].tolist()]
        assert s.as_dict(steps=36, epochs=3, diverged_step=None)["median_grad_norm"] == float(np.median(norms))
    best = (math.inf, None)
    for flush in range(3):
        for j, v in enumerate([0.5, 0.4, 0.4, math.nan]):
            if v < best[0]:
                best = (v, 4 * flush + j)
    assert (many[0].best_val_loss, many[0].best_val_epoch) == best == (0.4, 1)
    assert many[4].best_val_acc == max(v for flush_val in seen_val for v in flush_val[4].tolist() if v == v)
    assert "median_update_ratio/fc0" not in one[1].as_dict(steps=36, epochs=3, diverged_step=None)
    assert 2 not in one[2].train_by_epoch or one[2].train_by_epoch[2][1] == 6  # flush 2's first epoch: inf only
    assert one[0].best_val_epoch == 1 and one[0].zero_update_steps > 0


def test_summaries_made_together_have_each_runs_medians_and_spikes():
    """`Summary.as_dicts` (a population's members ending together) computes medians and loss spikes for runs of
    equal length at once: each run's are still its own (np.median of its finite samples; no key without one),
    with runs of other lengths, NaN, infinities and an empty sample among them."""
    from array import array

    from core.training.curves import spikes
    from core.training.summary import Summary

    gen = np.random.default_rng(7)
    summaries = []
    for i, n in enumerate((30, 30, 30, 12, 0)):
        s = Summary()
        values = gen.normal(size=n)
        if n:
            values[i % n] = (math.nan, math.inf, -math.inf, 1.0, 0.0)[i]
        s.samples = {"grad_norm": array("d", values), "update_ratio/fc0": array("d", values[::3])}
        s.step_losses = array("d", np.abs(gen.normal(size=n)) + (np.arange(n) == 25) * 50)
        summaries.append(s)
    summaries[2].samples["grad_norm"] = array("d", [math.nan] * 30)  # no finite sample: no median
    got = Summary.as_dicts(summaries, steps=[30] * 5, epochs=[1] * 5, diverged_steps=[None] * 5)
    for s, out in zip(summaries, got):
        for key, values in s.samples.items():
            finite = np.asarray(values)[np.isfinite(values)]
            assert out.get(f"median_{key}") == (float(np.median(finite)) if finite.size else None), key
        assert out["loss_spikes"] == spikes(np.asarray(s.step_losses))
        assert out == s.as_dict(steps=30, epochs=1, diverged_step=None)
    assert got[0]["loss_spikes"] == 1 and got[3]["loss_spikes"] == 0
