"""A linear regression at its exact least-squares minimum: a regular model with a Gaussian
posterior, λ = d/2 (shared by the stopping-rule and preconditioner tests)."""
from __future__ import annotations

import torch


def regression(d: int, n: int, seed: int = 0, outputs: int = 1, spread: float = 1.0, rotated: bool = True,
               intercept: bool = False, noise: float = 0.3) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """``outputs`` targets from ``d`` inputs (λ = (d + intercept)·outputs/2); ``spread`` > 1 scales
    the inputs' principal axes from 1/spread to spread (in a random basis when ``rotated``, else
    along the coordinates), so the Hessian is anisotropic; ``noise``: the targets' noise sd."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if spread != 1.0:
        basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        x = x @ torch.diag(torch.logspace(-1, 1, d, base=spread, dtype=torch.float64))
        if rotated:
            x = x @ basis.T
    y = x @ torch.randn(d, outputs, generator=gen, dtype=torch.float64) + noise * torch.randn(
        n, outputs, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(d, outputs, bias=intercept, dtype=torch.float64)
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1) if intercept else x
    solution = torch.linalg.lstsq(design, y).solution
    with torch.no_grad():
        model.weight.copy_(solution[:d].T)
        if intercept:
            model.bias.copy_(solution[d])
    return model, x, y
