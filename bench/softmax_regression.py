"""A regular model with an exact λ: softmax regression at its maximum-likelihood fit.

One class's weights are redundant (adding a vector to every class's logits changes nothing), so
of d = K(p + 1) parameters (K − 1)(p + 1) count: λ = (K − 1)(p + 1)/2. Features are standardized,
so the cross-entropy's curvature is weak (nβ·h_top in the hundreds at n = 1e4) and the
localization's share of λ̂ shows (docs/benchmarks.md §4zb). Needs only torch and the product's
loss, so tests import it as ``bench.softmax_regression``.
"""
from __future__ import annotations

import torch

from lambdascope.llc.losses import cross_entropy


def exact_lambda(p: int, k: int) -> float:
    return (k - 1) * (p + 1) / 2


def softmax_problem(p: int, k: int, n: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Standardized features, labels drawn from a random softmax teacher, w* the maximum-likelihood
    fit (L-BFGS to a gradient of ~1e-5)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=gen)
    logits = x @ torch.randn(k, p, generator=gen).T + 0.5 * torch.randn(k, generator=gen)
    y = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)
    torch.manual_seed(seed)
    model = torch.nn.Linear(p, k)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return model, x, y
