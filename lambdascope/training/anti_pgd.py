"""Anticorrelated noise injection (Anti-PGD, Orvieto et al., ICML 2022, arXiv 2202.02831).

Perturbed gradient descent adds fresh noise after every step; Anti-PGD adds the increment of
the noise instead, so consecutive perturbations are anticorrelated:

    PGD:       w_{t+1} = w_t − η∇L(w_t) + ξ_{t+1}
    Anti-PGD:  w_{t+1} = w_t − η∇L(w_t) + (ξ_{t+1} − ξ_t)

On average Anti-PGD descends L + (σ²/2)·Tr ∇²L, so it is biased towards flat minima; PGD is
not. Anti-PGD is run in its clean-weights form z = w − ξ_t: the gradient is taken at z + ξ_t
and applied to z, so the parameters (and hence checkpoints) hold the clean weights between
steps. `NoiseInjection` wraps any torch optimizer's step:

    noise.perturb(t); loss = L(model(x)); loss.backward(); noise.restore()
    optimizer.step(); noise.after_step(t)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

KINDS = ("pgd", "anti_pgd")
DISTRIBUTIONS = ("gaussian", "rademacher")


class NoiseInjection:
    """Adds PGD or Anti-PGD noise around an optimizer's steps (1-based step numbers).

    Noise applies at steps t with `active(t)`: all steps when `stop_step` is 0, otherwise
    t < stop_step. anti_pgd: `perturb(t)` moves the parameters to z_t + ξ_t for the forward and
    backward pass, `restore()` copies the clean z_t back (bit-exact) before the optimizer step.
    pgd: `after_step(t)` adds a fresh ξ_{t+1} to the parameters when `active(t)`.

    Draw order (the only source of randomness is one CPU `torch.Generator` seeded with `seed`).
    A draw makes one tensor per parameter, in the order of `params`, each on the CPU in the
    parameter's dtype and then moved to its device:
        gaussian:    torch.randn(p.shape, generator=g, dtype=p.dtype) * sigma
        rademacher:  (torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p.dtype) * sigma
    anti_pgd draws ξ_1 in the constructor if active(1), and ξ_{t+1} in after_step(t) if
    active(t + 1). pgd draws in after_step(t) if active(t). Nothing else draws.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        *,
        kind: str,
        sigma: float,
        distribution: str = "gaussian",
        stop_step: int = 0,
        seed: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"noise.kind must be one of {KINDS}, got {kind!r}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"noise.distribution must be one of {DISTRIBUTIONS}, got {distribution!r}"
            )
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"noise.sigma must be finite and >= 0, got {sigma}")
        if stop_step < 0:
            raise ValueError(f"noise.stop_step must be >= 0 (0 = never stop), got {stop_step}")
        self.params = list(params)
        self.kind = kind
        self.sigma = float(sigma)
        self.distribution = distribution
        self.stop_step = stop_step
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._perturbed = False
        if kind == "anti_pgd":
            self._xi = self._draw() if self.active(1) else self._zeros()
            self._clean = [torch.empty_like(p) for p in self.params]

    def active(self, step: int) -> bool:
        """Whether noise applies at 1-based `step`."""
        return self.stop_step == 0 or step < self.stop_step

    def perturb(self, step: int) -> None:
        """Before the forward pass of `step` (anti_pgd): parameters ← z_t + ξ_t."""
        self._check_clean("perturb")
        if self.kind != "anti_pgd" or not self.active(step):
            return
        with torch.no_grad():
            for p, clean, xi in zip(self.params, self._clean, self._xi):
                clean.copy_(p)
                p.add_(xi)
        self._perturbed = True

    def restore(self) -> None:
        """After backward, before optimizer.step(): parameters ← z_t exactly (no-op if clean)."""
        if not self._perturbed:
            return
        with torch.no_grad():
            for p, clean in zip(self.params, self._clean):
                p.copy_(clean)
        self._perturbed = False

    def after_step(self, step: int) -> None:
        """After optimizer.step() of `step`: next ξ (anti_pgd) or add fresh noise (pgd)."""
        self._check_clean("after_step")
        if self.kind == "anti_pgd":
            self._xi = self._draw() if self.active(step + 1) else self._zeros()
        elif self.active(step):
            with torch.no_grad():
                for p, xi in zip(self.params, self._draw()):
                    p.add_(xi)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Generator state (uint8) and, for anti_pgd, the pending ξ per parameter ("xi.<i>")."""
        self._check_clean("state_dict")
        state = {"generator": self._generator.get_state()}
        if self.kind == "anti_pgd":
            state.update({f"xi.{i}": xi.clone() for i, xi in enumerate(self._xi)})
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._check_clean("load_state_dict")
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(
                f"noise state for kind {self.kind!r} needs keys {sorted(expected)}, "
                f"got {sorted(state)}"
            )
        if self.kind == "anti_pgd":
            for i, p in enumerate(self.params):
                if state[f"xi.{i}"].shape != p.shape:
                    raise ValueError(
                        f"noise state xi.{i} has shape {tuple(state[f'xi.{i}'].shape)}, "
                        f"parameter {i} has {tuple(p.shape)}"
                    )
        self._generator.set_state(state["generator"].to("cpu", torch.uint8))
        if self.kind == "anti_pgd":
            self._xi = [
                state[f"xi.{i}"].to(p.device, p.dtype, copy=True) for i, p in enumerate(self.params)
            ]

    def _draw(self) -> list[torch.Tensor]:
        g = self._generator
        draws = []
        for p in self.params:
            if self.distribution == "gaussian":
                xi = torch.randn(p.shape, generator=g, dtype=p.dtype)
            else:
                xi = (torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p.dtype)
            draws.append((xi * self.sigma).to(p.device))
        return draws

    def _zeros(self) -> list[torch.Tensor]:
        return [torch.zeros_like(p) for p in self.params]

    def _check_clean(self, method: str) -> None:
        if self._perturbed:
            raise RuntimeError(f"NoiseInjection.{method} called before restore()")
