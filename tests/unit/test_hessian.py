"""Hessian trace (Hutchinson) and top eigenvalue (power iteration) against exact Hessians."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from lambdascope.llc.hessian import HessianSummary, hessian_summary, hessian_trace, top_eigenvalue

mse = torch.nn.functional.mse_loss
ce = torch.nn.functional.cross_entropy



def exact_hessian(model, x, y, loss_fn, names=None) -> torch.Tensor:
    """Dense Hessian of the full-data mean loss in the named parameters (flattened, model order)."""
    params = dict(model.named_parameters())
    names = names or list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    fixed = {k: v.detach() for k, v in params.items() if k not in names}

    def f(flat):
        state = {k: c.reshape(s) for k, c, s in zip(names, flat.split(sizes), shapes)}
        return loss_fn(functional_call(model, {**state, **fixed}, (x,)), y)

    flat = torch.cat([params[k].detach().reshape(-1) for k in names])
    return torch.autograd.functional.hessian(f, flat)


@pytest.fixture(scope="module")
def trained():
    """A tanh MLP at an exact minimum: targets are its own outputs (zero loss, PSD Hessian 2/n·JᵀJ)."""
    torch.manual_seed(0)
    x = torch.randn(37, 3, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    y = model(x).detach()
    return model, x, y, exact_hessian(model, x, y, mse)


def test_trace_is_within_a_few_stderr_of_the_exact_trace(trained):
    model, x, y, h = trained
    est, stderr = hessian_trace(model, x, y, mse, probes=400, batch_size=64)
    exact = torch.trace(h).item()
    assert stderr > 0
    assert abs(est - exact) < 4 * stderr
    assert abs(est - exact) < 0.1 * abs(exact)


def test_top_eigenvalue_is_within_one_percent_of_eigvalsh(trained):
    model, x, y, h = trained
    eig = torch.linalg.eigvalsh(h)
    assert eig.min() > -1e-6 * eig.max()  # the fixture really is at a minimum
    top = top_eigenvalue(model, x, y, mse, iterations=500, tol=1e-8)
    assert top == pytest.approx(eig.max().item(), rel=0.01)


def test_batching_gives_the_full_batch_answer(trained):
    model, x, y, _ = trained
    full = hessian_summary(model, x, y, mse, probes=8, batch_size=1000, iterations=50, seed=3)
    batched = hessian_summary(model, x, y, mse, probes=8, batch_size=5, iterations=50, seed=3)
    assert batched.trace == pytest.approx(full.trace, rel=1e-9)
    assert batched.trace_stderr == pytest.approx(full.trace_stderr, rel=1e-9)
    assert batched.top_eigenvalue == pytest.approx(full.top_eigenvalue, rel=1e-9)
    assert batched.power_iterations == full.power_iterations
    assert isinstance(full, HessianSummary) and full.probes == 8 and 1 <= full.power_iterations <= 50


def test_indefinite_hessian_away_from_a_minimum(trained):
    model, x, _, _ = trained
    y = torch.randn(x.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    eig = torch.linalg.eigvalsh(exact_hessian(model, x, y, mse))
    dominant = eig[eig.abs().argmax()].item()
    est, stderr = hessian_trace(model, x, y, mse, probes=400)
    assert abs(est - eig.sum().item()) < 4 * stderr
    assert top_eigenvalue(model, x, y, mse, iterations=500, tol=1e-8) == pytest.approx(dominant, rel=0.01)


def test_restricting_to_one_layer_takes_that_block(trained):
    model, x, y, _ = trained
    names = ["0.weight", "0.bias"]
    block = exact_hessian(model, x, y, mse, names)
    est, stderr = hessian_trace(model, x, y, mse, probes=400, params=names)
    assert abs(est - torch.trace(block).item()) < 4 * stderr
    top = top_eigenvalue(model, x, y, mse, params=names, iterations=500, tol=1e-8)
    assert top == pytest.approx(torch.linalg.eigvalsh(block).max().item(), rel=0.01)
    with pytest.raises(ValueError, match="unknown parameter names"):
        hessian_trace(model, x, y, mse, params=["nope.weight"])


class Quadratic(torch.nn.Module):
    """Loss ½ Σ c_i w_i² through the output: the Hessian is exactly diag(c)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(dim, dtype=torch.float64))

    def forward(self, x):
        return self.w.expand(x.shape[0], -1) + 0 * x[:, :1]


def quadratic_loss(c):
    return lambda out, _y: 0.5 * (c * out.square()).sum(dim=1).mean()


def test_trace_is_exact_for_a_diagonal_hessian():
    torch.manual_seed(1)
    c = torch.tensor([3.0, 0.5, 2.0, 0.0, 7.0], dtype=torch.float64)
    x, y = torch.zeros(10, 1, dtype=torch.float64), torch.zeros(10)
    est, stderr = hessian_trace(Quadratic(5), x, y, quadratic_loss(c), probes=3, batch_size=4)
    assert est == pytest.approx(12.5, abs=1e-12)  # Rademacher: vᵀ diag(c) v = Σ c_i exactly
    assert stderr == pytest.approx(0.0, abs=1e-12)
    top = top_eigenvalue(Quadratic(5), x, y, quadratic_loss(c), tol=1e-10, iterations=500)
    assert top == pytest.approx(7.0, rel=1e-4)


def test_dominant_negative_curvature_keeps_its_sign():
    torch.manual_seed(2)
    c = torch.tensor([-3.0, 1.0, 0.5], dtype=torch.float64)
    x, y = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4)
    top = top_eigenvalue(Quadratic(3), x, y, quadratic_loss(c), iterations=500, tol=1e-10)
    assert top == pytest.approx(-3.0, rel=1e-4)


def test_exported_programs_give_the_module_answer():
    torch.manual_seed(3)
    x = torch.randn(23, 4)
    y = torch.randint(0, 3, (23,))
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    batch = torch.export.Dim("batch")
    dynamic = torch.export.export(model, (x[:2].clone(),), dynamic_shapes=({0: batch},)).module()
    static = torch.export.export(model, (x[:4].clone(),)).module()  # fixed to batches of 4
    ref = hessian_summary(model, x, y, ce, probes=6, iterations=30, batch_size=10)
    for program in (dynamic, static):
        got = hessian_summary(program, x, y, ce, probes=6, iterations=30, batch_size=10)
        assert got.trace == pytest.approx(ref.trace, rel=1e-4)
        assert got.top_eigenvalue == pytest.approx(ref.top_eigenvalue, rel=1e-4)


def test_the_model_is_not_modified(trained):
    model, x, y, _ = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hessian_summary(model, x, y, mse, probes=2, iterations=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_nan_data_is_a_clear_error(trained):
    model, x, y, _ = trained
    bad = x.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite values in x"):
        hessian_trace(model, bad, y, mse)
    with pytest.raises(ValueError, match="probes must be >= 1"):
        hessian_trace(model, x, y, mse, probes=0)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        top_eigenvalue(model, x, y, mse, iterations=0)


def test_overflowing_weights_are_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e30)
    x, y = torch.ones(4, 2), torch.zeros(4, 1)
    with pytest.raises(FloatingPointError, match="not finite"):
        hessian_trace(model, x, y, mse, probes=2)
