"""Activation penalties: values by hand, gradients, spec checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lambdascope.training.penalties import CompiledPenalty, penalty_value, total_penalty
from lambdascope.training.sites import capture
from lambdascope.v1 import trainer_pb2
from services.trainer.translate import compile_penalties



A = torch.tensor([[1.0, -2.0], [3.0, 0.5]])


def test_l2_and_l1_values_and_gradients():
    a = A.clone().requires_grad_()
    value = penalty_value("l2", a)
    assert value.item() == pytest.approx((1 + 4 + 9 + 0.25) / 4)
    value.backward()
    assert torch.allclose(a.grad, 2 * A / 4)
    a.grad = None
    value = penalty_value("l1", a)
    assert value.item() == pytest.approx((1 + 2 + 3 + 0.5) / 4)
    value.backward()
    assert torch.equal(a.grad, torch.sign(A) / 4)


def test_half_decorrelation_by_hand():
    # Columns A = [u, v], B = [u, w]; Pearson correlations: corr(u, u) = 1,
    # corr(u, w) = cov / (sd_u sd_w) = -1 / sqrt(1.25), corr(v, u) = corr(v, w) = 0.
    u = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    v = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    w = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    a = torch.stack([u, v, u, w], dim=1)
    expected = (1 + 1 / math.sqrt(1.25) + 0 + 0) / 4
    assert penalty_value("half_decorrelation", a).item() == pytest.approx(expected, rel=1e-7)


def test_half_decorrelation_perfectly_correlated_halves_and_odd_width():
    # Every column is ±(a positive multiple of) the same vector: |corr| = 1 for every pair,
    # including the 2 x 3 pairs of an odd width 5 split into halves of 2 and 3.
    z = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.5], dtype=torch.float64)
    a = torch.stack([z, 3 * z, -z, 0.5 * z + 7, -2 * z], dim=1)
    assert penalty_value("half_decorrelation", a).item() == pytest.approx(1.0, rel=1e-7)


def test_half_decorrelation_flattens_conv_activations():
    torch.manual_seed(0)
    a = torch.randn(16, 2, 2, 2)
    flat = a.reshape(16, 8)
    assert torch.equal(
        penalty_value("half_decorrelation", a), penalty_value("half_decorrelation", flat)
    )


def test_half_decorrelation_of_independent_columns_is_near_zero():
    # Each entry of C is a sample correlation of independent columns: about N(0, 1/n), so
    # E|C| = sqrt(2/pi)/sqrt(n) ≈ 0.0125 at n = 4096; the mean of 16 entries has sd ≈ 0.0024.
    # 3/sqrt(n) ≈ 0.047 leaves a wide margin.
    torch.manual_seed(0)
    n = 4096
    value = penalty_value("half_decorrelation", torch.randn(n, 8)).item()
    assert value < 3 / math.sqrt(n)


def test_half_decorrelation_gradient_flows_and_survives_a_dead_unit():
    torch.manual_seed(1)
    a = torch.randn(32, 6)
    a[:, 4] = 0.0  # a dead ReLU unit: constant over the batch
    a.requires_grad_()
    penalty_value("half_decorrelation", a).backward()
    assert torch.isfinite(a.grad).all()
    assert a.grad.abs().sum() > 0


def test_half_decorrelation_of_a_single_example_is_zero():
    assert penalty_value("half_decorrelation", torch.randn(1, 6)).item() == 0.0


def test_unknown_kind_value():
    with pytest.raises(ValueError, match="unknown penalty kind 'l3'"):
        penalty_value("l3", A)


def test_total_penalty_from_captured_activations():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(10, 3)
    penalties = [
        CompiledPenalty("1", "l1", 0.5),
        CompiledPenalty("1", "l2", 2.0),
        CompiledPenalty("2", "half_decorrelation", 0.1),
    ]
    with capture(model, ["1", "2"]) as got:
        out = model(x)
    h = torch.relu(model[0](x))
    expected = 0.5 * h.abs().mean() + 2.0 * h.pow(2).mean()
    expected = expected + 0.1 * penalty_value("half_decorrelation", out)
    total = total_penalty(penalties, got)
    assert torch.allclose(total, expected)
    total.backward()
    assert model[0].weight.grad.abs().sum() > 0
    assert total_penalty([], {}).item() == 0.0


def test_total_penalty_needs_captured_sites():
    with pytest.raises(ValueError, match=r"\['latent'\] were not captured"):
        total_penalty([CompiledPenalty("latent", "l1", 1.0)], {"hidden.1": A})


SHAPES = {"hidden.1": (8,), "conv.1": (3, 4, 4), "out": (1,)}


def test_compile_penalties():
    specs = [
        trainer_pb2.ActivationPenalty(site="hidden.1", kind=trainer_pb2.PENALTY_KIND_L2, weight=2),
        trainer_pb2.ActivationPenalty(
            site="conv.1", kind=trainer_pb2.PENALTY_KIND_HALF_DECORRELATION, weight=0.1
        ),
        trainer_pb2.ActivationPenalty(site="out", kind=trainer_pb2.PENALTY_KIND_L1),
    ]
    assert compile_penalties(specs, SHAPES) == [
        CompiledPenalty("hidden.1", "l2", 2.0),
        CompiledPenalty("conv.1", "half_decorrelation", 0.1),
        CompiledPenalty("out", "l1", 0.0),
    ]


@pytest.mark.parametrize("site, kind, weight, field, detail", [
    ("latent", trainer_pb2.PENALTY_KIND_L1, 1.0, "penalties[1].site",
     "known sites: hidden.1, conv.1, out"),
    ("hidden.1", trainer_pb2.PENALTY_KIND_UNSPECIFIED, 1.0, "penalties[1].kind",
     "got 0"),
    ("hidden.1", 99, 1.0, "penalties[1].kind", "got 99"),
    ("hidden.1", trainer_pb2.PENALTY_KIND_L1, -0.5, "penalties[1].weight", ">= 0"),
    ("hidden.1", trainer_pb2.PENALTY_KIND_L1, float("nan"), "penalties[1].weight", "finite"),
    ("hidden.1", trainer_pb2.PENALTY_KIND_L1, float("inf"), "penalties[1].weight", "finite"),
    ("out", trainer_pb2.PENALTY_KIND_HALF_DECORRELATION, 1.0, "penalties[1].site",
     "at least 2 units"),
])
def test_compile_penalties_errors_name_the_field(site, kind, weight, field, detail):
    specs = [
        trainer_pb2.ActivationPenalty(site="hidden.1", kind=trainer_pb2.PENALTY_KIND_L1, weight=1),
        trainer_pb2.ActivationPenalty(site=site, kind=kind, weight=weight),
    ]
    with pytest.raises(ValueError) as err:
        compile_penalties(specs, SHAPES)
    message = str(err.value)
    assert message.startswith(field), message
    assert detail in message, message
