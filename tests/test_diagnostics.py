import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from core.experiment.losses import bce_loss, logits_loss
from core.training.diagnostics import (batchnorm_stats, dead_relu_frac, grad_norms, grad_vanish_frac,
                                       output_diagnostics)
from core.training.scores import roc_auc, roc_auc_rows


def diag_with_grad(z, y, loss="bce", **kw):
    zt = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float32)
    value = bce_loss(zt, yt, **kw) if loss == "bce" else logits_loss(zt, yt, **kw)
    value.backward()
    return {k: v.item() for k, v in output_diagnostics(zt, yt, loss=loss, z_grad=zt.grad, **kw).items()}


def test_hand_made_logits_clamp_fractions():
    d = diag_with_grad([20.0, -100.0, 0.0], [0.0, 0.0, 1.0])
    assert d["clamp_frac"] == pytest.approx(2 / 3)
    assert d["clamp_wrong_frac"] == pytest.approx(1 / 3)
    # z=20 with y=0: zero gradient where |sigmoid(z) - y| = 1. z=-100 with y=0 is right, its exact gradient is 0.
    assert d["grad_vanish_frac"] == pytest.approx(1 / 3)
    assert d["pred_pos_rate"] == pytest.approx(2 / 3)  # z=20 and z=0 (sigmoid 0.5 counts as positive)
    assert d["logit_abs_max"] == 100.0
    assert d["logit_mean"] == pytest.approx(-80 / 3)
    assert d["logit_std"] == pytest.approx(float(np.std([20, -100, 0], ddof=1)), rel=1e-6)
    assert d["train_loss_logits"] == pytest.approx((20 + 0 + math.log(2)) / 3, rel=1e-6)


def test_logits_loss_never_vanishes():
    d = diag_with_grad([20.0, -100.0, 0.0, 40.0], [0.0, 1.0, 1.0, 0.0], loss="bce_with_logits")
    assert d["grad_vanish_frac"] == 0.0
    assert d["clamp_wrong_frac"] == pytest.approx(0.75)  # measured on sigmoid, whatever the loss


def test_grad_vanish_with_pos_weight_normalises_weights():
    z, y = torch.tensor([-2.0, 1.0], requires_grad=True), torch.tensor([1.0, 0.0])
    logits_loss(z, y, pos_weight=4.0).backward()
    assert grad_vanish_frac(z.detach(), y, z.grad, pos_weight=4.0).item() == 0.0


def test_attenuated_gradient_below_minus_27_6():
    # The 1e-12 floor in BCELoss's backward: at z=-30 the gradient is ~9% of exact (kept), at z=-40 ~0% (vanished).
    d = diag_with_grad([-30.0, -40.0], [1.0, 1.0])
    assert d["grad_vanish_frac"] == pytest.approx(0.5)
    assert d["clamp_frac"] == 0.0


def test_eps_clamp_frac():
    d = diag_with_grad([0.0, 10.0, -10.0, 3.0], [1.0, 1.0, 0.0, 1.0], clamp_eps=0.01)
    assert d["eps_clamp_frac"] == pytest.approx(0.5)  # sigmoid(±10) is outside [0.01, 0.99]; sigmoid(3)=0.953 is not
    assert d["grad_vanish_frac"] == pytest.approx(0.5)


def test_float16_saturates_earlier():
    z = torch.tensor([9.0, 9.0], dtype=torch.float16)
    d = output_diagnostics(z, torch.tensor([0.0, 1.0], dtype=torch.float16), loss="bce")
    assert d["clamp_frac"].item() == 1.0 and d["clamp_wrong_frac"].item() == 0.5
    d32 = output_diagnostics(z.float(), torch.tensor([0.0, 1.0]), loss="bce")
    assert d32["clamp_frac"].item() == 0.0


def test_dead_relu_frac():
    h1 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 3.0]])  # unit 0 dead
    h2 = torch.tensor([[0.0], [0.0]])  # dead
    assert dead_relu_frac([h1, h2]).item() == pytest.approx(2 / 4)
    assert dead_relu_frac([], torch.tensor([0.0, 0.0])).item() == 1.0
    assert dead_relu_frac([h1], torch.tensor([0.0, 0.5])).item() == pytest.approx(1 / 4)


def test_grad_norms_per_layer():
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(1, 1)
    for p in list(a.parameters()) + list(b.parameters()):
        p.grad = torch.full_like(p, 2.0)
    out = grad_norms([("fc0", a), ("out", b)])
    assert out["grad_norm/fc0"].item() == pytest.approx(math.sqrt(3 * 4))
    assert out["grad_norm/out"].item() == pytest.approx(math.sqrt(2 * 4))
    assert out["grad_norm"].item() == pytest.approx(math.sqrt(5 * 4))


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.integers(0, 2, 200)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert math.isnan(roc_auc(scores, np.ones(200)))


def test_batchnorm_stats():
    bn = torch.nn.BatchNorm1d(3)
    bn.running_var.copy_(torch.tensor([0.5, 0.1, 2.0]))
    bn.running_mean.copy_(torch.tensor([-3.0, 1.0, 2.0]))
    out = batchnorm_stats([("bn0", bn)])
    assert out["bn_min_running_var/bn0"].item() == pytest.approx(0.1)
    assert out["bn_max_abs_running_mean/bn0"].item() == 3.0


def test_roc_auc_rows_is_each_rows_auc():
    rng = np.random.default_rng(3)
    labels = rng.random(50) > 0.4
    scores = np.round(rng.normal(size=(5, 50)), 1)  # rounded: many ties within a row
    scores[3, 7] = np.nan
    scores[4, 0] = np.inf
    got = roc_auc_rows(scores, labels)
    assert got[:3].tolist() == pytest.approx([roc_auc_score(labels, row) for row in scores[:3]], abs=1e-12)
    assert np.isnan(got[3:]).all()  # a non-finite score: no AUC for that row
    assert np.isnan(roc_auc_rows(scores, np.ones(50))).all()
    assert [roc_auc(row, labels) for row in scores[:3]] == got[:3].tolist()
    distinct = rng.normal(size=(2, 50))  # no ties at all
    assert roc_auc_rows(distinct, labels).tolist() == pytest.approx([roc_auc_score(labels, r) for r in distinct])


def test_roc_auc_rows_of_float32_rows_sorted_as_integers_equal_the_pair_count():
    rng = np.random.default_rng(5)
    labels = rng.random(40) > 0.5
    rows = rng.normal(scale=3.0, size=(8, 40)).astype(np.float32)  # distinct: the integer sort alone
    rows[1] = -np.abs(rows[1])  # all negative: the flipped bits must keep their order
    rows[2] = np.round(rows[2])  # many ties: average ranks for this row
    rows[3, labels.argmax()], rows[3, labels.argmin()] = 0.0, -0.0  # equal: a tie, counted half
    rows[4, 5], rows[5, 6] = np.inf, np.nan
    rows[6] = rng.normal(size=40).astype(np.float32) * 1e-30  # tiny, near zero on both sides
    rows[7, labels] += 100.0  # every positive above every negative

    def pairs(row: np.ndarray) -> float:  # the definition: each (positive, negative) pair, ties counted half
        pos, neg = row[labels].astype(np.float64)[:, None], row[~labels].astype(np.float64)[None, :]
        return float(((pos > neg) + 0.5 * (pos == neg)).mean())

    got, finite = roc_auc_rows(rows, labels), [0, 1, 2, 3, 6, 7]
    assert got[finite].tolist() == [pairs(rows[i]) for i in finite]
    assert got[7] == 1.0
    assert np.isnan(got[[4, 5]]).all()
    assert got[finite].tolist() == roc_auc_rows(rows.astype(np.float64), labels)[finite].tolist()
    assert roc_auc_rows(rows.astype(np.float16), labels)[0] == pytest.approx(pairs(rows[0].astype(np.float16)))


def test_scores_of_many_rows_in_blocks_are_those_of_one_pass(monkeypatch):
    """`roc_auc_rows` and `ece_rows` work on blocks of BLOCK_ROWS rows; the rows come out in order and equal to
    one pass over all of them, a last block shorter, rows with NaN and infinities among them."""
    from core.training import scores

    rng = np.random.default_rng(2)
    z = (rng.normal(size=(11, 30)) * 4).astype(np.float32)
    z[4, 2], z[9, 0] = np.nan, np.inf
    labels = (rng.random(30) > 0.5).astype(np.float64)
    whole = scores.roc_auc_rows(z, labels), scores.ece_rows(z, labels)
    monkeypatch.setattr(scores, "BLOCK_ROWS", 3)
    blocks = scores.roc_auc_rows(z, labels), scores.ece_rows(z, labels)
    for a, b in zip(whole, blocks):
        assert a.shape == (11,) and np.array_equal(a, b, equal_nan=True)
    assert [scores.roc_auc(row, labels) for row in z[:4]] == blocks[0][:4].tolist()
    assert np.isnan(blocks[0][[4, 9]]).all() and np.isnan(blocks[1][[4, 9]]).all()


# ---------------------------------------------------------------------- measurements the causes need
def test_margin_min_is_the_most_wrong_signed_logit():
    d = diag_with_grad([3.0, -20.0, 0.5], [1.0, 1.0, 0.0])
    assert d["margin_min"] == pytest.approx(-20.0)  # a positive at z = -20
    d = diag_with_grad([3.0, 9.0], [1.0, 0.0])
    assert d["margin_min"] == pytest.approx(-9.0)  # a negative at z = 9


def test_ece_and_reliability_by_hand():
    from core.training.scores import ece_rows, reliability

    # two samples predicted 0.5 (one positive: calibrated), two predicted ~0.88 (both negative: off by 0.88)
    z = np.array([0.0, 0.0, 2.0, 2.0])
    y = np.array([1.0, 0.0, 0.0, 0.0])
    p = 1 / (1 + math.exp(-2.0))
    assert ece_rows(z[None, :], y)[0] == pytest.approx(0.5 * 0 + 0.5 * p)
    curve = reliability(z, y)
    assert curve == {"predicted": [0.5, pytest.approx(p)], "observed": [0.5, 0.0], "count": [2, 2]}
    rows = ece_rows(np.array([[0.0, 0.0, 2.0, 2.0], [0.0, math.nan, 0.0, 0.0]]), y)
    assert math.isnan(rows[1]) and rows[0] == pytest.approx(0.5 * p)
    assert reliability(np.array([math.inf, 0.0]), y[:2]) == {"predicted": [], "observed": [], "count": []}


def test_update_ratio_and_stuck_updates_per_layer():
    from core.training.diagnostics import GradLayout

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    layout = GradLayout([("fc0", model[0]), ("out", model[1])], list(model.parameters()))
    after = torch.tensor([[3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])  # fc0: 6 values, out: 3 + 1
    delta = torch.tensor([[0.3, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    grads = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    out = layout.updates(delta, after, grads)
    assert out["update_ratio/fc0"].item() == pytest.approx(0.1)
    assert out["update_ratio/out"].item() == 0.0
    assert out["update_norm"].item() == pytest.approx(0.5)
    assert out["stuck_update_frac"].item() == pytest.approx(6 / 8)  # 8 live gradients, 2 of them moved


def test_first_nonfinite_layer_in_forward_order():
    from core.experiment.config import ExperimentConfig
    from core.experiment.models import build_model
    from core.training.diagnostics import first_nonfinite_layer

    model = build_model(ExperimentConfig(hidden=(4, 4)), 3)
    x = torch.ones(5, 3)
    assert first_nonfinite_layer(model, x) is None
    with torch.no_grad():
        model.hidden[1].fc.weight[0, 0] = math.inf
    assert first_nonfinite_layer(model, x) in ("fc1", "act1")  # inf * a zero ReLU output is NaN, else inf
    assert first_nonfinite_layer(model, torch.full((5, 3), math.nan)) == "input"


@pytest.mark.parametrize("loss, clamp_eps, pos_weight, dtype", [("bce", 1e-4, 1.0, torch.float32),
                                                                ("bce_with_logits", None, 3.0, torch.float32),
                                                                ("bce", None, 1.0, torch.float16)])
def test_row_output_diagnostics_are_each_rows_segment_diagnostics(loss, clamp_eps, pos_weight, dtype):
    """A population reduces its steps' outputs a row a batch (`row_output_diagnostics`); the single-run trainer
    by a batch index per sample (`segment_output_diagnostics`). Same keys, same values up to the order of the
    sums, NaN and infinities included (a row with NaN, one with +inf, one saturated, one exactly at z = 0)."""
    from core.training.diagnostics import row_output_diagnostics, segment_output_diagnostics

    gen = torch.Generator().manual_seed(5)
    z = (torch.randn(6, 32, generator=gen) * 30).to(dtype)
    z[1, 3], z[2, 5], z[4] = math.nan, math.inf, 0.0
    y = (torch.rand(6, 32, generator=gen) > 0.5).to(dtype)
    z_grad = (torch.randn(6, 32, generator=gen) * 1e-3).to(dtype)
    seg = torch.arange(6).repeat_interleave(32)
    want = segment_output_diagnostics(z.reshape(-1), y.reshape(-1), seg, 6, loss=loss, clamp_eps=clamp_eps,
                                      pos_weight=pos_weight, z_grad=z_grad.reshape(-1))
    got = row_output_diagnostics(z, y, loss=loss, clamp_eps=clamp_eps, pos_weight=pos_weight, z_grad=z_grad)
    assert list(got) == list(want)
    for key in want:
        assert got[key].shape == (6,)
        assert torch.allclose(got[key], want[key], rtol=1e-6, atol=0, equal_nan=True), key
    assert math.isnan(got["logit_mean"][1]) and got["logit_abs_max"][2] == math.inf
    assert got["pred_pos_rate"][4] == 1.0 and got["logit_std"][4] == 0.0
