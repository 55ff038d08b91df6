"""Experiment (not the product's sampler, not run by make test): does a fixed preconditioner
make SGLD on a deep linear network reach its plateau sooner?

The estimator's SGLD moves every direction by the same step, which the stiffest directions cap,
so on deep DLNs λ̂ climbs for tens of thousands of steps (docs/benchmarks.md §4o). Any FIXED
positive-definite M samples the same posterior (w ← w − (ε/2)·M∇U + √ε·M^½ξ), and the bias
probes of lambdascope.llc.sgld keep their meaning along the move actually made (the noise part
weighted by M). Here M is, per layer, the inverse of a Kronecker estimate of the potential's
curvature, taken in its eigenbasis: at stationarity E[∇U ∇Uᵀ] = E[∇²U], so the gradients'
row and column second moments S (out × out) and T (in × in) over a stretch of sampling give
curvature s_i·t_j / tr S along eigenvector pair (i, j); M's eigenvalue there is
(1 / max(curvature, γ))^power, scaled so the flattest directions get 1. It is estimated twice
(after a plain warm-up, then after a preconditioned stretch), then frozen; ε is set by short
pilots to a predicted bias of 2% of λ̂, and lowered (as the estimator's retune does) when a
chunk's bias passes 4%. Plain mode runs the estimator's update at a given ε with the same
retune. Both print, per 1,000-step chunk, λ̂, the predicted bias and λ̂ − bias relative to λ:

    .venv/bin/python bench/preconditioned_sgld.py --seed 479027353 --case R0-L5 --mode plain --eps 4e-7
    .venv/bin/python bench/preconditioned_sgld.py --seed 479027353 --case R0-L5 --mode precond --power 0.5

4 chains, batch 256, γ = 10, nβ = n/log n, one thread, on a default_audit.py draw. Results in
docs/benchmarks.md §4r.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from types import SimpleNamespace

import common  # noqa: F401  (sets sys.path for dln and the product)
import default_audit
import dln
import torch

from lambdascope.llc.calibration import predicted_bias

GAMMA, CHAINS, BATCH, CHUNK = 10.0, 4, 256, 1000
Layers = list[torch.Tensor]  # per layer (chains, out, in)


class Problem:
    def __init__(self, seed: int, name: str):
        cases, _, _ = default_audit.draw_cases(random.Random(seed), 10, "cuts")
        self.case = next(c for c in cases if c.name == name)
        model, self.x, self.y = dln.make_problem(self.case)
        self.lam, n = self.case.theory_lambda(), self.x.shape[0]
        self.nbeta = n / math.log(n)
        self.center = [layer.weight.detach().clone().unsqueeze(0) for layer in model]
        with torch.no_grad():
            self.init_loss = dln.mse(model(self.x), self.y).item()
        self.gen = torch.Generator().manual_seed(1)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.x.shape[0], (CHAINS * BATCH,), generator=self.gen)
        return self.x[idx].view(CHAINS, BATCH, -1), self.y[idx].view(CHAINS, BATCH, -1)

    def grads(self, w: Layers, xb: torch.Tensor, yb: torch.Tensor) -> tuple[Layers, torch.Tensor]:
        """Per chain: the mean-loss gradient per layer, and the minibatch loss."""
        w = [t.detach().requires_grad_(True) for t in w]
        h = xb
        for t in w:
            h = h @ t.transpose(-1, -2)
        loss = ((h - yb) ** 2).mean(dim=(1, 2))
        return [g.detach() for g in torch.autograd.grad(loss.sum(), w)], loss.detach()


class Preconditioner:
    """Per layer (U_out, U_in, m): M·D = U_out (m ⊙ (U_outᵀ D U_in)) U_inᵀ; None: the identity."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None):
        self.layers = layers

    def rotate(self, d: torch.Tensor, k: int) -> torch.Tensor:
        if self.layers is None or self.layers[k][0] is None:
            return d
        return self.layers[k][0].T @ d @ self.layers[k][1]

    def back(self, e: torch.Tensor, k: int) -> torch.Tensor:
        if self.layers is None or self.layers[k][0] is None:
            return e
        return self.layers[k][0] @ e @ self.layers[k][1].T

    def m(self, k: int) -> torch.Tensor | float:
        return 1.0 if self.layers is None else self.layers[k][2]

    @staticmethod
    def estimate(moments: list[tuple[torch.Tensor, torch.Tensor]], count: int, power: float) -> Preconditioner:
        layers = []
        for s_sum, t_sum in moments:
            s, t = s_sum / count, t_sum / count
            sv, us = torch.linalg.eigh(s)
            tv, ut = torch.linalg.eigh(t)
            curvature = sv.clamp(min=0)[:, None] * tv.clamp(min=0)[None, :] / s.trace()
            layers.append((us.float(), ut.float(), ((1.0 / curvature.clamp(min=GAMMA)) ** power).float()))
        top = max(m.max().item() for _, _, m in layers)
        return Preconditioner([(u, v, m / top) for u, v, m in layers])

    @staticmethod
    def estimate_diagonal(squares: list[torch.Tensor], count: int, power: float) -> Preconditioner:
        """Per parameter: (1 / max(E[(∂U)²], γ))^power, the flattest scaled to 1."""
        layers = [(None, None, ((1.0 / (sq / count).clamp(min=GAMMA)) ** power).float()) for sq in squares]
        top = max(m.max().item() for _, _, m in layers)
        return Preconditioner([(None, None, m / top) for _, _, m in layers])


def run(p: Problem, w: Layers, eps: float, steps: int, pre: Preconditioner, moments=None
        ) -> tuple[Layers, float, float]:
    """``steps`` steps from ``w``; (last states, λ̂ and predicted bias over the second half).
    Every 10th step is scored for the bias (curvature along the move, and minibatch noise at M)."""
    losses, curvature, noise = [], [], []
    for t in range(steps):
        xb, yb = p.batch()
        g, loss = p.grads(w, xb, yb)
        losses.append(loss)
        gu = [p.nbeta * gi + GAMMA * (wi - c) for gi, wi, c in zip(g, w, p.center)]
        if moments is not None:
            for moment, u in zip(moments, gu):
                if isinstance(moment, tuple):
                    moment[0].add_((u @ u.transpose(-1, -2)).sum(0).double())
                    moment[1].add_((u.transpose(-1, -2) @ u).sum(0).double())
                else:
                    moment.add_(u.square().sum(0).double())
        new = []
        for k, (wi, u) in enumerate(zip(w, gu)):
            xi = torch.randn(wi.shape, generator=p.gen)
            m = pre.m(k)
            step = -eps / 2 * m * pre.rotate(u, k) + (eps * torch.as_tensor(m)).sqrt() * xi
            new.append(wi + pre.back(step, k))
        if t % 10 == 9 and t >= steps // 2:
            g2, _ = p.grads(new, xb, yb)
            curvature.append(sum(p.nbeta * ((b - a) * (wn - wo)).sum(dim=(1, 2))
                                 for a, b, wn, wo in zip(g, g2, new, w)))
            g3, _ = p.grads(new, *p.batch())
            noise.append(sum((pre.m(k) * pre.rotate(p.nbeta * (b - c), k).square()).sum(dim=(1, 2))
                             for k, (b, c) in enumerate(zip(g2, g3))))
        w = new
    llc = p.nbeta * (torch.stack(losses[steps // 2:]).mean().item() - p.init_loss)
    scored = SimpleNamespace(accept_steps=torch.arange(len(curvature)), curvature=torch.stack(curvature, 1),
                             grad_noise=torch.stack(noise, 1))
    bias = predicted_bias(scored, 0, eps)  # the estimator's formula (noise already weighted by M)
    return w, llc, bias


def zero_moments(p: Problem, diagonal: bool = False) -> list:
    if diagonal:
        return [torch.zeros(c.shape[1:], dtype=torch.float64) for c in p.center]
    return [(torch.zeros(c.shape[1], c.shape[1], dtype=torch.float64),
             torch.zeros(c.shape[2], c.shape[2], dtype=torch.float64)) for c in p.center]


def estimate(moments: list, count: int, power: float) -> Preconditioner:
    if isinstance(moments[0], tuple):
        return Preconditioner.estimate(moments, count, power)
    return Preconditioner.estimate_diagonal(moments, count, power)


def chunks(p: Problem, w: Layers, eps: float, steps: int, pre: Preconditioner, label: str,
           refresh_power: float | None = None, diagonal: bool = False) -> None:
    """1,000-step chunks; the step is lowered as the estimator's retune does. With
    ``refresh_power`` the preconditioner is re-estimated from each chunk's gradients (any fixed
    M samples the same posterior; M changes only between chunks) before any lowering is judged."""
    began = time.perf_counter()
    for k in range(steps // CHUNK):
        moments = zero_moments(p, diagonal) if refresh_power is not None else None
        w, llc, bias = run(p, w, eps, CHUNK, pre, moments)
        print(f"{label} {k + 1:3d}k ε {eps:.3g} {time.perf_counter() - began:5.0f}s  λ̂ {llc / p.lam:.3f}λ  "
              f"bias {bias / p.lam:.3f}λ  λ̂−bias {(llc - bias) / p.lam:.3f}λ", flush=True)
        if moments is not None:
            pre = estimate(moments, CHUNK * CHAINS, refresh_power)
        if bias / llc > 0.04:  # as the estimator's retune: back to the 2% target, at most ÷4
            eps *= max(0.25, 0.02 / (bias / llc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--mode", choices=("plain", "precond", "refreshed", "diagonal"), default="precond",
                    help="refreshed: precond, with M re-estimated after every chunk; diagonal: refreshed, "
                         "with a diagonal M (per-parameter second moments of the gradient of U)")
    ap.add_argument("--eps", type=float, default=4e-7, help="plain: the step; precond: the warm-up's is 4x it")
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--power", type=float, default=0.5, help="M = curvature^-power")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = Problem(args.seed, args.case)
    w = [c.repeat(CHAINS, 1, 1) for c in p.center]
    print(f"{args.case}: widths {p.case.widths}, λ {p.lam:g}, nβ {p.nbeta:.0f}", flush=True)
    if args.mode == "plain":
        chunks(p, w, args.eps, args.steps, Preconditioner(), "plain")
        return
    pre, eps, step = Preconditioner(), args.eps * 4, args.eps * 4
    w, _, _ = run(p, w, step, CHUNK, pre)
    for rounds in range(2):
        moments = zero_moments(p, args.mode == "diagonal")
        w, _, _ = run(p, w, step, CHUNK, pre, moments)
        pre = estimate(moments, CHUNK * CHAINS, args.power)
        eps = 1e-2 / GAMMA  # pilots from the current states: bias is linear in ε
        for _ in range(5):
            _, llc, bias = run(p, w, eps, 400, pre)
            frac = bias / max(llc, 0.5 * p.lam)
            print(f"  pilot ε {eps:.3g}: λ̂ {llc / p.lam:.3f}λ, bias {bias / p.lam:.3f}λ", flush=True)
            eps = eps / 8 if not math.isfinite(frac) else eps * min(4.0, 0.02 / frac)
        step = eps
    chunks(p, w, eps, args.steps, pre, args.mode, args.power if args.mode in ("refreshed", "diagonal") else None,
           args.mode == "diagonal")


if __name__ == "__main__":
    main()
