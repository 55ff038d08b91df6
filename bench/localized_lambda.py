"""What the localization takes off λ on a network's quadratic part (not run by make test).

    .venv/bin/python bench/localized_lambda.py bench/results/default_audit_run21.json R2-L3 10 5000

At w* a direction of curvature h of L (the mean MSE the estimator samples) contributes
½·nβh/(nβh + γ) to E[nβ(L − L*)] under the localized Gaussian posterior, not ½: the sum over
∇²L's eigenvalues is the estimator's own expectation where λ = rank(∇²L)/2 and the posterior
stays in w*'s Gaussian (docs/benchmarks.md §4za: on R2-L3 it does not). Arguments: a
default_audit results file, a case, γ (10, the default localization), and how many of the
examples the Hessian is taken on (5000). Dense Hessian: up to d of about 10,000.
"""
import math
import sys

import common  # sets sys.path for dln and the product
import dln
import torch

torch.set_num_threads(2)
row = common.audited_case(sys.argv[1], sys.argv[2])
model, x, y = dln.make_problem(dln.case_from_dict(row["case"]))
n = x.shape[0]
nbeta = n / math.log(n)
gamma = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
sub = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
flat0, hessian = common.dense_hessian(model, x[:sub], y[:sub])
h = torch.linalg.eigvalsh(hessian).clamp(min=0)
localized = float((0.5 * nbeta * h / (nbeta * h + gamma)).sum())
print(f"{sys.argv[2]}: d {flat0.numel()}, rank(∇²L)/2 {row['hessian_bound']}, Aoyagi λ {row['lambda']}, "
      f"Σ½·nβh/(nβh+γ) at γ={gamma:g}: {localized:.1f} ({100*(localized/row['lambda']-1):+.2f}% of λ); "
      f"ours {row['ours']['lambda_hat']:.1f} ({100*(row['ours']['lambda_hat']/row['lambda']-1):+.2f}%)")
