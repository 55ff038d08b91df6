"""How fast preconditioned SGLD would relax on a network's localized Gaussian at w*, in closed form
(not run by make test; an analysis, not a product path).

    .venv/bin/python bench/gaussian_relaxation.py bench/results/default_audit_run21.json R2-L3 --base 1.1e-6

On the quadratic potential U = ½·Δᵀ(nβ∇²L + γ)Δ the sampler's update Δ ← Δ − (ε/2)·M∇U + √ε·M^½ξ is
linear, so from Δ = 0 (the chains start at w*) its covariance after t steps is exact: in
z = M^−½Δ the update is z ← (1 − (ε/2)B)z + √ε·ξ with B = M^½(nβ∇²L + γ)M^½, and along B's
eigenvector q_k (eigenvalue μ_k) Var z = ε·(1 − r^2t)/(1 − r²), r = 1 − εμ_k/2. λ̂(t) is then
Σ_k ½·Var z_k·q_kᵀM^½·nβ∇²L·M^½q_k, Euler's step bias included. Printed over λ for:
- "none": M = I at ``--base``, the plain calibrated step;
- "kronecker": the product's M, estimated like the audit's from a 1,000-step warm-up at
  ``--base`` and frozen, at ``--step`` (default: the audit's final step);
- "exact": M = ((nβ∇²L + γ)/γ)^−½, the same rule on the exact Hessian (what an M that couples the
  weight matrices could reach), at the step whose Euler bias equals the kronecker one's.
What it cannot say: how the chains behave once they leave w*'s Gaussian (on singular networks
they do; docs/benchmarks.md §4za). Dense matrices: d up to about 10,000.
"""
from __future__ import annotations

import argparse
import math
import sys

import common  # sets sys.path for dln and the product
import dln
import torch

from lambdascope.llc import preconditioner

STEPS = (1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000)


def relaxation(root: torch.Tensor, stiffness: torch.Tensor, energy: torch.Tensor, step: float) -> list[float]:
    """E[nβ(L − L*)] after each of STEPS steps and at stationarity, for M^½ = ``root``, nβ∇²L + γ =
    ``stiffness`` and nβ∇²L = ``energy`` (all dense)."""
    mu, q = torch.linalg.eigh(root @ stiffness @ root)
    weight = (q * (root @ energy @ root @ q)).sum(0)
    r = 1 - step * mu / 2
    if not bool((r.abs() < 1).all()):
        return [math.nan] * (len(STEPS) + 1)
    out = [float(0.5 * (step * (1 - r ** (2 * t)) / (1 - r**2) * weight).sum()) for t in STEPS]
    return out + [float(0.5 * (step / (1 - r**2) * weight).sum())]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results")
    p.add_argument("case")
    p.add_argument("--base", type=float, required=True, help="the calibrated plain step (the warm-up's)")
    p.add_argument("--step", type=float, help="the kronecker run's step (default: the audit's final one)")
    p.add_argument("--examples", type=int, default=5000, help="examples the Hessian is taken on")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    row = common.audited_case(args.results, args.case)
    model, x, y = dln.make_problem(dln.case_from_dict(row["case"]))
    lam, nbeta = row["lambda"], x.shape[0] / math.log(x.shape[0])
    kwargs, _, m = common.kronecker_warmup(model, x, y, nbeta, args.base)
    m, gamma = m.to(torch.device("cpu"), torch.float64), kwargs["localization"]
    _, hessian = common.dense_hessian(model, x[:args.examples], y[:args.examples])
    dim = hessian.shape[0]
    energy = nbeta * hessian
    eye = torch.eye(dim, dtype=torch.float64)
    stiffness = energy + gamma * eye
    rotation_t = m.unrotated(eye)  # row i is R·e_i: Rᵀ
    kronecker_root = rotation_t.T @ (m.root[:, None] * rotation_t)
    a, v = torch.linalg.eigh(stiffness)
    exact_root = (v * (a.clamp(min=gamma) / gamma).pow(-preconditioner.POWER / 2)) @ v.T
    step = args.step if args.step is not None else row["ours"]["step_size"]
    # Euler's bias is (ε/8)·tr(M·nβ∇²L): equal bias, equal ε·tr(M·nβ∇²L)
    exact_step = step * float((kronecker_root @ kronecker_root * energy).sum()) / float(
        (exact_root @ exact_root * energy).sum())
    h = torch.linalg.eigvalsh(energy).clamp(min=0)
    print(f"{args.case}: d {dim}, λ {lam}, localized expectation Σ½·nβh/(nβh+γ) "
          f"{float((0.5 * h / (h + gamma)).sum()) / lam:.4f} λ; λ̂(t)/λ after t steps from w*:")
    print("            step      " + " ".join(f"{t:>8d}" for t in STEPS) + "  stationary")
    for name, root, eps in (("none", eye, args.base), ("kronecker", kronecker_root, step),
                            ("exact", exact_root, exact_step)):
        values = relaxation(root, stiffness, energy, eps)
        print(f"  {name:9s} {eps:9.3g} " + " ".join(f"{v / lam:8.3f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
