"""w*'s slope on a trained classifier: what it makes of λ̂, and what removing it does (not run by
make test). docs/benchmarks.md §4zt.

    .venv/bin/python bench/slope_at_w_star.py                      # 600 s per audit, 2 threads
    .venv/bin/python bench/slope_at_w_star.py --epochs 1 --max-seconds 240

The demo's baseline network (MLP 64-256-10 on the 1,797 digits, cross-entropy, SGD lr 0.05,
momentum 0.9, batch 64, the demo's 50 epochs), trained in process, then audited twice with
``run_audit`` at the defaults and a time cap: the loss as it is (the default) and with its
tangent plane at w* removed (``remove_slope``). A cross-entropy model on separable data has no
minimum (its loss falls as the logits grow), so ∇L_n(w*) is never zero there. Prints, per audit,
λ̂, the slope's part of the sampled loss, |∇L_n(w*)|, the drift, the ESS and how it stopped.
"""
from __future__ import annotations

import argparse
import json
import time

import common  # sets sys.path for the product
import torch
import torch.nn.functional as F

from lambdascope.llc.audit import AuditSettings, run_audit
from lambdascope.llc.llc import SGLDConfig
from lambdascope.training.datasets import load_digits_dataset


def trained(epochs: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x, y = load_digits_dataset()
    x, y = x.float(), y.long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return common.train_classifier(model, x, y, opt, epochs), x, y


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, x, y = trained(args.epochs, args.seed)
    rows = []
    for remove in (False, True):
        began = time.perf_counter()
        config = SGLDConfig(max_seconds=args.max_seconds, remove_slope=remove)
        audit = run_audit(model, x, y, F.cross_entropy, AuditSettings(config), device="cpu")
        llc, d = audit.llc, audit.diagnostics
        row = dict(remove_slope=remove, llc=llc.mean, slope_term=llc.slope_term, gradient_norm=llc.gradient_norm,
                   localization=llc.localization, drift=llc.drift, drift_error=llc.drift_error, ess=d.ess,
                   rhat=d.rhat, steps=llc.stopping.steps, stopped=llc.stopping.reason, verdict=audit.verdict.state,
                   seconds=time.perf_counter() - began)
        rows.append(row)
        print(f"remove_slope={remove}: λ̂ {llc.mean:.2f}, slope's part {llc.slope_term:+.2f} "
              f"({100 * llc.slope_term / abs(llc.mean):+.1f}%), |∇L_n(w*)| {llc.gradient_norm:.3g}, γ {llc.localization:.3g}, "
              f"drift {100 * llc.drift:+.1f}% ± {100 * llc.drift_error:.1f}% per doubling, ESS {d.ess:.0f}, "
              f"R-hat {d.rhat:.3f}, {llc.stopping.steps} steps ({llc.stopping.reason}), {audit.verdict.state}, "
              f"{row['seconds']:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "machine": common.machine(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
