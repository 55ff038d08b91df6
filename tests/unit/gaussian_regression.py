"""A linear regression at its exact least-squares minimum: a regular model with a Gaussian
posterior, λ = d/2 (shared by the stopping-rule and preconditioner tests)."""
from __future__ import annotations

import torch


def regression(d: int, n: int, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(d, 1, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(n, 1, generator=gen,
                                                                                    dtype=torch.float64)
    model = torch.nn.Linear(d, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y
