"""Where the chains of a deep linear network drift: its rescaling orbits (not run by make test).

A DLN's loss is unchanged by W_k → diag(c) W_k, W_{k+1} → W_{k+1} diag(c)⁻¹ for every hidden
layer k (and, more generally, by any invertible matrix in place of diag(c)). SGLD's noise has an
Itô part that moves each hidden unit's balance Q = |row of W_k|² − |column of W_{k+1}|² by
ε·(H_{k−1} − H_{k+1}) per step on average, which the loss's gradient never restores (gradient
flow keeps Q fixed) and only the localization pulls back, on a time scale of 1/γ in the chains'
age. This script measures that, and what the localized posterior looks like where the drift
leads, on a case of a default-audit draw:

    .venv/bin/python bench/orbit_equilibrium.py bench/results/default_audit_run30.json R3-L6 --mode plain
    ... --mode moves --step 1e-7        # exact Metropolis moves along the per-unit orbits
    ... --mode balanced                  # each unit's balance held at w*'s after every step

The chains sample the population loss (x ~ U(−10, 10): E[x xᵀ] = 100/3 I, so L(w) =
(100/3)/H_L·‖P − P*‖²_F for the product P), full gradient, plain SGLD (no preconditioner, no
minibatch): the mechanism, not the product's sampler. λ̂ is printed as sampled (with the step's
bias in it), relative to Aoyagi's λ, per window, with each chain's value and the mean |Q − Q*|.

``moves``: every ``--move-every`` steps each hidden unit proposes log c ~ N(0, s²) (alternate
hidden layers at a time, as neighbours share a matrix) and accepts with
exp(−(γ/2)Δ‖w − w*‖²)·c^(H_{k−1} − H_{k+1}): the loss is unchanged and c^(H_{k−1} − H_{k+1}) is
the map's Jacobian, so the move leaves the localized posterior invariant and reaches its
equilibrium along these orbits at once. docs/benchmarks.md §4zp has the results.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import common  # noqa: F401  (sets sys.path)
import dln
import torch


def population_loss(weights: list[torch.Tensor], target: torch.Tensor, out: int) -> torch.Tensor:
    """Per chain: the MSE's expectation over x ~ U(−10, 10)^H_0 (mean over outputs)."""
    product = weights[0]
    for w in weights[1:]:
        product = torch.bmm(w, product)
    diff = product - target
    return (dln.INPUT_RANGE ** 2 / 3) / out * (diff * diff).sum(dim=(1, 2))


def balances(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Q per hidden unit (chains × H_k) for each hidden layer k."""
    return [(weights[k - 1] ** 2).sum(2) - (weights[k] ** 2).sum(1) for k in range(1, len(weights))]


def orbit_moves(weights, centre, widths, gamma, scale, gen) -> float:
    """One Metropolis sweep along every hidden unit's rescaling orbit; the acceptance rate."""
    accepted = []
    for parity in (1, 2):
        for k in range(parity, len(widths) - 1, 2):
            rows, cols = weights[k - 1], weights[k]
            log_c = scale * torch.randn(rows.shape[:2], generator=gen, dtype=rows.dtype)
            c = log_c.exp()
            new_rows, new_cols = rows * c.unsqueeze(2), cols / c.unsqueeze(1)
            pull = (((new_rows - centre[k - 1]) ** 2).sum(2) - ((rows - centre[k - 1]) ** 2).sum(2)
                    + ((new_cols - centre[k]) ** 2).sum(1) - ((cols - centre[k]) ** 2).sum(1))
            log_accept = -(gamma / 2) * pull + (widths[k - 1] - widths[k + 1]) * log_c
            ok = torch.rand(log_accept.shape, generator=gen, dtype=rows.dtype).log() < log_accept
            c = torch.where(ok, c, torch.ones_like(c))
            rows.mul_(c.unsqueeze(2))
            cols.div_(c.unsqueeze(1))
            accepted.append(ok.double().mean().item())
    return sum(accepted) / len(accepted)


def hold_balance(weights, targets) -> None:
    """Rescale each hidden unit along its orbit so that Q equals w*'s (c² solves a c⁴ − Q* c² − b = 0)."""
    for k in range(1, len(weights)):
        rows, cols = weights[k - 1], weights[k]
        a, b, q = (rows ** 2).sum(2), (cols ** 2).sum(1), targets[k - 1]
        c = ((q + (q * q + 4 * a * b).sqrt()) / (2 * a)).sqrt()
        rows.mul_(c.unsqueeze(2))
        cols.div_(c.unsqueeze(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="a bench/results/default_audit_run*.json")
    p.add_argument("case", help="a row's case name, e.g. R3-L6")
    p.add_argument("--mode", choices=("plain", "moves", "balanced"), default="plain")
    p.add_argument("--step", type=float, default=1e-6)
    p.add_argument("--gamma", type=float, default=10.0, help="the localization (the product's γ on these DLNs)")
    p.add_argument("--steps", type=int, default=40_000)
    p.add_argument("--window", type=int, default=4000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--move-every", type=int, default=10)
    p.add_argument("--move-scale", type=float, default=0.1, help="s: the proposal's sd of log c")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    row = next(r for r in json.load(open(args.results))["rows"] if r["case"]["name"] == args.case)
    case = dln.case_from_dict(row["case"])
    lam, widths, nbeta = case.theory_lambda(), case.widths, dln.default_nbeta()
    mats = dln.teacher_matrices(case)
    target = mats[0]
    for m in mats[1:]:
        target = m @ target
    centre = [m.unsqueeze(0).expand(args.chains, -1, -1).clone() for m in mats]
    weights = [m.clone().requires_grad_(True) for m in centre]
    balance_at_centre = [q.detach().clone() for q in balances(centre)]
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{args.case}: widths {widths}, d {case.num_parameters}, r {case.rank}, λ {lam}; mode {args.mode}, "
          f"step {args.step:g}, γ {args.gamma:g}, {args.chains} chains, nβ {nbeta:.1f}")

    start = time.time()
    energies, rates = [], []
    for t in range(1, args.steps + 1):
        loss = population_loss(weights, target, widths[-1])
        grads = torch.autograd.grad(loss.sum(), weights)
        with torch.no_grad():
            for w, g, c in zip(weights, grads, centre):
                noise = torch.randn(w.shape, generator=gen, dtype=w.dtype)
                w.add_(-(args.step / 2) * (nbeta * g + args.gamma * (w - c)) + math.sqrt(args.step) * noise)
            energies.append(nbeta * loss.detach())
            if args.mode == "balanced":
                hold_balance(weights, balance_at_centre)
            elif args.mode == "moves" and t % args.move_every == 0:
                rates.append(orbit_moves(weights, centre, widths, args.gamma, args.move_scale, gen))
        if t % args.window == 0:
            level = torch.stack(energies).mean(0) / lam
            energies = []
            with torch.no_grad():
                spread = sum((q - q0).abs().mean().item() for q, q0 in zip(balances(weights), balance_at_centre))
            accept = f", move acceptance {sum(rates[-50:]) / len(rates[-50:]):.2f}" if rates else ""
            print(f"  steps {t - args.window + 1:>6}-{t:<6} λ̂/λ {level.mean().item():7.3f}  chains "
                  f"{' '.join(f'{v:.3f}' for v in level.tolist())}  mean |Q − Q*| "
                  f"{spread / (len(widths) - 2):.3f}{accept}  ({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
