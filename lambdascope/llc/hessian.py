"""Curvature of the full-data mean loss L_n at the trained weights w*: Hessian trace and top eigenvalue.

Both come from Hessian-vector products (HVPs) of L_n, never from the Hessian itself: L_n is a
mean over the data, so H·v is summed over batches as Σ_b (|b| / n)·H_b·v, exact for a loss_fn
that returns the MEAN over its batch. HVPs are reverse-over-reverse: ``vjp(grad(f))`` gives
vᵀH = (Hv)ᵀ since H is symmetric (forward-over-reverse, ``jvp(grad(f))``, failed on a plain
tanh MLP in torch 2.13 with "ZeroTensors are immutable"). One linearization per batch serves
every vector of a block, so a block of Hutchinson probes shares one pass over the data (blocks
hold at most :data:`PROBE_BLOCK_ELEMENTS` numbers). The model is only read through
``functional_call`` (via :func:`lambdascope.llc.sgld.make_forward`), so it is never mutated
and ``torch.export`` programs work, including ones fixed to one batch size.

- :func:`hessian_trace`: Hutchinson's estimator tr(H) ≈ mean_i v_iᵀ H v_i with Rademacher probes
  v_i (each entry ±1), unbiased; its standard error is the probes' sample std / sqrt(probes).
- :func:`top_eigenvalue`: power iteration on H, reporting the Rayleigh quotient vᵀHv of the final
  unit vector. Power iteration converges to the eigenvalue of largest MAGNITUDE, and the value
  keeps its sign: at a minimum H is positive semi-definite and this is the top eigenvalue; a
  negative result means the dominant curvature is negative, i.e. w* is a saddle or a maximum
  along that direction (itself a finding: w* is not a minimum).

Neither number is reparametrisation-invariant (unlike λ̂): report them beside λ̂, not instead.
``params`` restricts the Hessian to the named parameters (one layer, say), the others held fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.func import grad, vjp

from lambdascope.llc.sgld import make_forward

__all__ = ["HessianSummary", "hessian_summary", "hessian_trace", "top_eigenvalue"]

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]

DEFAULT_PROBES = 100
DEFAULT_BATCH_SIZE = 1024
DEFAULT_ITERATIONS = 100
DEFAULT_TOL = 1e-4
PROBE_BLOCK_ELEMENTS = 1 << 24  # probes per data pass × parameters: 64 MiB of float32


@dataclass
class HessianSummary:
    trace: float  # Hutchinson estimate of tr(∇²L_n(w*))
    trace_stderr: float  # its standard error (nan for one probe)
    top_eigenvalue: float  # dominant eigenvalue (largest |λ|, sign kept) by power iteration
    probes: int
    power_iterations: int  # iterations actually run (fewer than asked when converged)


class _HVP:
    """H·v of the full-data mean loss at w*, for v flattened over the chosen parameters."""

    def __init__(
        self,
        model: torch.nn.Module,
        x: Tensor,
        y: Tensor,
        loss_fn: LossFn,
        batch_size: int,
        params: Sequence[str] | None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        n = x.shape[0]
        if n == 0 or y.shape[0] != n:
            raise ValueError(f"x and y must hold as many examples, at least one (got {n} and {y.shape[0]})")
        named = dict(model.named_parameters())
        if params is None:
            names = [k for k, p in named.items() if p.requires_grad]
        else:
            names = list(params)
            unknown = [k for k in names if k not in named]
            if unknown:
                raise ValueError(f"unknown parameter names {unknown}; the model has {list(named)}")
        if not names:
            raise ValueError("no parameters to take the Hessian in (none requires grad)")
        first = named[names[0]]
        if not first.is_floating_point():
            raise ValueError(f"parameter {names[0]} is not floating point ({first.dtype})")
        device, dtype = first.device, first.dtype
        for label, t in (("x", x), ("y", y)):
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"the data hold {bad} NaN or infinite values in {label}; clean the data set")
        self.x = x.to(device=device, dtype=dtype if x.is_floating_point() else None)
        self.y = y.to(device=device, dtype=dtype if y.is_floating_point() else None)
        self.n, self.batch_size, self.loss_fn = n, batch_size, loss_fn
        self.names = names
        self.primal = {k: named[k].detach() for k in names}
        self.fixed = {k: p.detach() for k, p in named.items() if k not in self.primal}
        self.fixed.update({k: b.detach() for k, b in model.named_buffers()})
        self.shapes = [p.shape for p in self.primal.values()]
        self.sizes = [p.numel() for p in self.primal.values()]
        self.dim = sum(self.sizes)
        self.device, self.dtype = device, dtype
        self.model = model
        self.vectorized = True
        self.forward = make_forward(model, vectorized=True)

    def _unflatten(self, v: Tensor) -> dict[str, Tensor]:
        return {k: c.reshape(s) for k, c, s in zip(self.names, v.split(self.sizes), self.shapes)}

    def _batch_hvps(self, xb: Tensor, yb: Tensor, vs: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        def f(p: dict[str, Tensor]) -> Tensor:
            return self.loss_fn(self.forward({**p, **self.fixed}, xb), yb)

        # One linearization of the gradient per batch, reused for every vector.
        _, pullback = vjp(grad(f), self.primal)
        return [pullback(v)[0] for v in vs]

    def __call__(self, vs: Tensor) -> Tensor:
        """H·v for each row v of ``vs`` shaped (k, dim); one pass over the data for all k."""
        vds = [self._unflatten(v) for v in vs]
        out = torch.zeros_like(vs)
        for i in range(0, self.n, self.batch_size):
            xb, yb = self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]
            try:
                hvs = self._batch_hvps(xb, yb, vds)
            except Exception:
                # vmap over the chunks of a fixed-batch program may not compose with every
                # model: fall back once to a plain loop over the chunks.
                if not self.vectorized:
                    raise
                self.vectorized = False
                self.forward = make_forward(self.model, vectorized=False)
                hvs = self._batch_hvps(xb, yb, vds)
            for row, hv in zip(out, hvs):
                row.add_(torch.cat([hv[k].reshape(-1) for k in self.names]), alpha=xb.shape[0] / self.n)
        if not torch.isfinite(out).all():
            raise FloatingPointError(
                "a Hessian-vector product is not finite: the loss or its derivatives overflow at w*; "
                "check the model's weights and the data for extreme values"
            )
        return out


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _trace(hvp: _HVP, probes: int, seed: int) -> tuple[float, float]:
    if probes < 1:
        raise ValueError(f"probes must be >= 1 (got {probes})")
    gen = _generator(seed)
    block = max(1, min(probes, PROBE_BLOCK_ELEMENTS // hvp.dim))
    parts = []
    for start in range(0, probes, block):
        k = min(block, probes - start)
        v = (torch.randint(0, 2, (k, hvp.dim), generator=gen) * 2 - 1).to(device=hvp.device, dtype=hvp.dtype)
        parts.append((v * hvp(v)).sum(dim=1).double().cpu())
    t = torch.cat(parts)
    stderr = (t.std() / math.sqrt(probes)).item() if probes > 1 else math.nan
    return t.mean().item(), stderr


def _power(hvp: _HVP, iterations: int, tol: float, seed: int) -> tuple[float, int]:
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1 (got {iterations})")
    gen = _generator(seed)
    v = torch.randn(hvp.dim, generator=gen, dtype=torch.float64).to(device=hvp.device, dtype=hvp.dtype)
    v /= v.norm()
    value = math.nan
    for it in range(1, iterations + 1):
        w = hvp(v[None])[0]
        new = torch.dot(v, w).item()
        norm = w.norm().item()
        if norm == 0.0:  # v lies in the null space: every eigenvalue it touches is 0
            return 0.0, it
        v = w / norm
        if abs(new - value) <= tol * abs(new):
            return new, it
        value = new
    return value, iterations


def hessian_trace(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    probes: int = DEFAULT_PROBES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    params: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Hutchinson estimate of tr(∇²L_n) at the model's weights, and its standard error.

    ``loss_fn(output, target)`` must return the batch MEAN. ``params``: parameter names to
    restrict the Hessian to (default: every parameter that requires grad). Costs
    ``probes`` full-data HVPs. The standard error is nan for a single probe.
    """
    return _trace(_HVP(model, x, y, loss_fn, batch_size, params), probes, seed)


def top_eigenvalue(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    tol: float = DEFAULT_TOL,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    params: Sequence[str] | None = None,
) -> float:
    """Dominant Hessian eigenvalue of L_n at the model's weights, by power iteration.

    Returns the Rayleigh quotient of the converged vector: the eigenvalue of largest magnitude
    with its sign (negative means dominant negative curvature: w* is not a minimum). Stops when
    successive estimates change by at most ``tol`` relative, or after ``iterations`` HVPs.
    """
    return _power(_HVP(model, x, y, loss_fn, batch_size, params), iterations, tol, seed)[0]


def hessian_summary(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    probes: int = DEFAULT_PROBES,
    iterations: int = DEFAULT_ITERATIONS,
    tol: float = DEFAULT_TOL,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    params: Sequence[str] | None = None,
) -> HessianSummary:
    """Trace (Hutchinson) and top eigenvalue (power iteration) of ∇²L_n at w*, sharing one setup."""
    hvp = _HVP(model, x, y, loss_fn, batch_size, params)
    trace, stderr = _trace(hvp, probes, seed)
    top, its = _power(hvp, iterations, tol, seed)
    return HessianSummary(
        trace=trace, trace_stderr=stderr, top_eigenvalue=top, probes=probes, power_iterations=its
    )
