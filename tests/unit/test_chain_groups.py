"""Chains in groups: the plan that bounds a pass's memory, and that grouping changes nothing."""
from __future__ import annotations

import pytest
import torch

from lambdascope.llc.llc import SGLDConfig, estimate_llc
from lambdascope.llc.chain_groups import (ACTIVATION_FACTOR, STATE_VECTORS, by_speed, plan_chains, saved_bytes_per_chain,
                                            worth_timing)
from lambdascope.llc.sgld import activation_bytes

mse = torch.nn.functional.mse_loss


def _mlp(width: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Tanh(), torch.nn.Linear(width, 1)).double()


def test_saved_bytes_are_what_autograd_keeps_and_grow_with_the_batch() -> None:
    model = _mlp()
    x, y = torch.randn(512, 8, dtype=torch.float64), torch.randn(512, 1, dtype=torch.float64)
    small = activation_bytes(model, x, y, mse, None, 64)
    large = activation_bytes(model, x, y, mse, None, 256)
    # Per example autograd keeps the first layer's input (8), tanh's output (32: its own backward
    # and the second layer's input, one tensor) and the output and target for the loss (1 + 1):
    # 42 doubles, plus a few scalars; the weights (views of the parameter vector) are not counted.
    assert 42 * 8 * 64 <= small <= 42 * 8 * 64 + 256
    assert 42 * 8 * 256 <= large <= 42 * 8 * 256 + 256


def test_saved_bytes_skip_the_parameter_vector() -> None:
    flat = torch.randn(1000, dtype=torch.float64)
    # The loss saves only views of the parameters (and a scalar), so nearly nothing counts.
    assert saved_bytes_per_chain(lambda w: (w[:500] * w[500:]).sum(), flat) == 0


def test_plan_fits_the_budget_and_keeps_one_chain_per_pass_at_least() -> None:
    per_chain = int(ACTIVATION_FACTOR * 1_000_000 + STATE_VECTORS * 100 * 4)
    assert plan_chains(8, 100, 4, 1_000_000, 100 * per_chain).per_pass == 8
    tight = plan_chains(8, 100, 4, 1_000_000, 3 * per_chain + 1)
    assert tight.per_pass == 3 and "3 chain(s) per pass" in tight.summary and "3 pass(es)" in tight.summary
    assert plan_chains(8, 100, 4, 1_000_000, 10).per_pass == 1
    assert plan_chains(8, 100, 4, 1_000_000, 100 * per_chain, requested=2).per_pass == 2


@pytest.mark.parametrize("batch_size", [64, 1000])  # minibatches (per-chain data), and the full batch
def test_chains_in_groups_give_the_same_estimate(batch_size: int) -> None:
    model = _mlp(6)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(300, 8, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    config = SGLDConfig(chains=3, draws=40, burnin=20, batch_size=batch_size, step_size=1e-4)
    together = estimate_llc(model, x, y, mse, config, device="cpu")
    grouped = estimate_llc(model, x, y, mse, SGLDConfig(**{**config.__dict__, "chains_per_pass": 2}), device="cpu")
    assert together.chain_plan.per_pass == 3 and grouped.chain_plan.per_pass == 2
    assert grouped.per_chain == pytest.approx(together.per_chain, rel=1e-9)
    assert grouped.acceptance == pytest.approx(together.acceptance, rel=1e-9)
    assert grouped.peak_memory_bytes > 0 and grouped.peak_memory_kind


def test_one_chain_per_pass_only_when_measured_clearly_faster() -> None:
    plan = plan_chains(4, 100, 4, 1_000, 1 << 30)
    assert by_speed(plan, 4, together=0.60, one_by_one=0.47).per_pass == 1
    assert "measured 470 ms per step" in by_speed(plan, 4, together=0.60, one_by_one=0.47).summary
    assert by_speed(plan, 4, together=0.60, one_by_one=0.57).per_pass == 4  # within 10%: keep together


def test_the_groupings_are_timed_only_when_the_run_repays_it() -> None:
    assert worth_timing(together=0.5, run_seconds=1800)  # 12 passes ≈ 6 s of a 30-minute cap
    assert not worth_timing(together=0.5, run_seconds=10)  # they would take most of a 10 s cap
    assert not worth_timing(together=0.001, run_seconds=1800)  # too short to time reliably
