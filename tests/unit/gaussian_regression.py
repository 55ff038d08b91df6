"""A linear regression at its exact least-squares minimum: a regular model with a Gaussian
posterior, λ = d/2 (shared by the stopping-rule and preconditioner tests)."""
from __future__ import annotations

import torch


def regression(d: int, n: int, seed: int = 0, outputs: int = 1, spread: float = 1.0, rotated: bool = True
               ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """``outputs`` targets from ``d`` inputs (λ = d·outputs/2); ``spread`` > 1 scales the inputs'
    principal axes from 1/spread to spread (in a random basis when ``rotated``, else along the
    coordinates), so the Hessian is anisotropic."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if spread != 1.0:
        basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        x = x @ torch.diag(torch.logspace(-1, 1, d, base=spread, dtype=torch.float64))
        if rotated:
            x = x @ basis.T
    y = x @ torch.randn(d, outputs, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(
        n, outputs, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(d, outputs, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y
