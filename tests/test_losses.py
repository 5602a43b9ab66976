"""The numerical table of shared/seed/README.md, reproduced through core's own loss code."""

import math

import pytest
import torch

from core.experiment.losses import bce_loss, logits_loss
from core.training.diagnostics import saturation_logits


def loss_and_grad(fn, z, y, **kw):
    zt = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    loss = fn(zt, torch.tensor(y, dtype=torch.float32), **kw)
    loss.backward()
    return loss.item(), zt.grad.tolist()


@pytest.mark.parametrize("z, y, bce, bce_grad, exact, exact_grad", [
    (0.0, 0.0, 0.6931472, 0.5, 0.6931472, 0.5),
    (0.0, 1.0, 0.6931472, -0.5, 0.6931472, -0.5),
    (16.0, 0.0, 15.942385, None, 16.0, None),
    (17.0, 0.0, 100.0, 0.0, 17.0, 1.0),
    (200.0, 0.0, 100.0, 0.0, 200.0, 1.0),
    (-30.0, 1.0, 30.0, -0.0936, 30.0, -1.0),
    (-89.0, 1.0, 100.0, 0.0, 89.0, -1.0),
])
def test_seed_table_single_element(z, y, bce, bce_grad, exact, exact_grad):
    loss, grad = loss_and_grad(bce_loss, [z], [y])
    assert loss == pytest.approx(bce, rel=1e-6)
    if bce_grad is not None:
        assert grad[0] == pytest.approx(bce_grad, abs=1e-4)
    loss, grad = loss_and_grad(logits_loss, [z], [y])
    assert loss == pytest.approx(exact, rel=1e-6)
    if exact_grad is not None:
        assert grad[0] == pytest.approx(exact_grad, abs=1e-6)


def test_sigmoid_16_is_one_minus_two_to_minus_23():
    assert torch.sigmoid(torch.tensor(16.0)).item() == 1 - 2**-23


def test_infinite_logit_mixed_batch():
    z, y = torch.tensor([math.inf, 1.0]), torch.tensor([1.0, 0.0])
    assert bce_loss(z, y).item() == pytest.approx(0.6566, abs=1e-4)
    assert math.isnan(logits_loss(z, y).item())


def test_pos_weight_on_logits():
    loss, grad = loss_and_grad(logits_loss, [0.0], [1.0], pos_weight=3.0)
    assert loss == pytest.approx(2.0794415, rel=1e-6)
    assert grad[0] == pytest.approx(-1.5)


def test_pos_weight_on_probabilities_matches_logits_where_exact():
    z, y = [0.3, -1.2, 2.0], [1.0, 0.0, 1.0]
    assert loss_and_grad(bce_loss, z, y, pos_weight=2.5)[0] == pytest.approx(
        loss_and_grad(logits_loss, z, y, pos_weight=2.5)[0], rel=1e-5)


def test_nan_logit_does_not_raise_in_bce():
    # nn.BCELoss itself raises for NaN input; core's bce must not, the trainer reports the NaN as divergence.
    with pytest.raises(RuntimeError):
        torch.nn.BCELoss()(torch.sigmoid(torch.tensor([math.nan])), torch.tensor([1.0]))
    assert math.isfinite(bce_loss(torch.tensor([math.nan, 0.0]), torch.tensor([1.0, 0.0])).item())


def test_clamp_eps_bounds_the_loss():
    loss, grad = loss_and_grad(bce_loss, [200.0], [0.0], clamp_eps=1e-3)
    assert loss == pytest.approx(-math.log(1e-3), rel=1e-3)
    assert grad[0] == 0.0  # clamped: no gradient either


@pytest.mark.parametrize("dtype, pos, neg", [
    (torch.float32, 16.6, -88.7), (torch.float16, 8.3, None), (torch.bfloat16, 6.2, None)])
def test_saturation_points(dtype, pos, neg):
    top, bottom = saturation_logits(dtype)
    assert top == pytest.approx(pos, abs=0.1)
    if neg is not None:
        assert bottom == pytest.approx(neg, abs=0.1)
    z = torch.tensor([top], dtype=dtype)
    assert torch.sigmoid(z).item() == 1.0
