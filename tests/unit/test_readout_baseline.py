"""λ̂ is read from each minibatch's loss less that minibatch's own loss at w* (a control variate:
the same expectation, without the minibatch's noise at w*), when the loss is a mean over examples.
On noisy data that noise is most of a draw's spread: checked against the exact λ of a regular model."""

from __future__ import annotations

import math

import torch

from lambdascope.llc.audit import diagnose
from lambdascope.llc.llc import SGLDConfig, batch_losses, estimate_llc
from lambdascope.llc.sgld import run_sgld

from gaussian_regression import regression

mse = torch.nn.functional.mse_loss


def _noisy(n: int, noise: float, seed: int = 3) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """A 4-input linear regression (d = 5 with its intercept) at its least-squares fit, labels with
    noise of sd ``noise``: λ = d/2 = 2.5."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    y = x @ torch.randn(4, 1, generator=gen) + noise * torch.randn(n, 1, generator=gen)
    design = torch.cat([x, torch.ones(n, 1)], 1).double()
    fit = torch.linalg.lstsq(design, y.double()).solution.float()
    model = torch.nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.copy_(fit[:4].T)
        model.bias.copy_(fit[4])
    return model, x, y


def test_each_examples_loss_at_w_star_is_kept_for_losses_that_are_means_over_examples() -> None:
    model, x, y = _noisy(1000, 0.5)
    mean, per_batch, baseline = batch_losses(model, x, y, mse, 256)
    with torch.no_grad():
        each = ((model(x) - y) ** 2).squeeze(1).double()
    assert baseline is not None and baseline.shape == (1000,)
    assert abs(mean - float(each.mean())) < 1e-6
    assert torch.allclose(baseline, each - mean, atol=1e-6)
    assert len(per_batch) == 3  # full batches only
    # a loss that is not a mean over examples (the square of the mean residual) gets none
    _, _, none = batch_losses(model, x, y, lambda o, t: (o - t).mean() ** 2, 256)
    assert none is None


def test_the_baseline_changes_the_readout_not_the_chains() -> None:
    """Same seed, with and without the baseline: the chains end at the same states; over whole
    epochs (every example drawn once per chain) the two readouts have the same mean; the
    baseline's readout spreads far less on noisy labels."""
    model, x, y = _noisy(2048, 0.5)
    init_loss, _, baseline = batch_losses(model, x, y, mse, 256)
    common = dict(chains=2, steps=64, step_size=1e-5, localization=3.0, nbeta=2048 / math.log(2048),
                  batch_size=256, seed=11, accept_every=0)
    plain = run_sgld(model, x, y, mse, **common)
    read = run_sgld(model, x, y, mse, **common, baseline=baseline)
    assert torch.equal(plain.final, read.final)
    # 64 steps of 256 = 8 epochs of 2048 examples per chain
    assert torch.allclose(plain.losses.double().mean(dim=1), read.losses.double().mean(dim=1), rtol=0, atol=1e-6)
    # at w* itself (the first step) the readout is L_n(w*) whatever the minibatch
    assert torch.allclose(read.losses[:, 0].double(), torch.full((2,), init_loss, dtype=torch.float64), atol=1e-6)
    assert float((plain.losses[:, 0].double() - init_loss).abs().min()) > 1e-3
    assert float(read.losses.std()) < 0.3 * float(plain.losses.std())  # measured: 0.19


def test_a_tiny_regular_model_on_noisy_labels_converges_by_its_targets_near_d_over_two() -> None:
    """Label noise of sd 0.5 on 10,000 examples: at w* a minibatch's nβ·L_B spreads by ~24 around
    a λ of 2.5, so read directly the MCSE target needed ~230,000 effective draws and the audit
    ran to its 100,000-step cap (measured before the baseline: `warning`, docs/benchmarks.md §4zg)."""
    model, x, y = _noisy(10_000, 0.5)
    result = estimate_llc(model, x, y, mse, SGLDConfig(max_steps=50_000), device="cpu")
    assert result.stopping.reason == "converged", result.stopping.summary
    assert abs(result.mean - 2.5) <= 0.1 * 2.5, result.mean
    assert diagnose(result)[1].state == "ok"


def test_a_regular_model_without_label_noise_reads_the_same_as_before() -> None:
    """Noise-free targets (the deep linear networks of the benchmark are such): the baseline is
    zero to rounding, so nothing changes."""
    model, x, y = regression(6, 512)
    y = model(x).detach()  # exact fit: every example's loss at w* is 0
    _, _, baseline = batch_losses(model, x, y, mse, 128)
    assert baseline is not None and float(baseline.abs().max()) < 1e-20
