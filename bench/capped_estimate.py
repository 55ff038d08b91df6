"""How long an estimate capped at a few seconds takes on the ~1M-parameter transformer (not run
by make test): a cap must hold on a model whose step is slow, not only on small ones.

    .venv/bin/python bench/capped_estimate.py                  # max_seconds = 10, 2 threads
    .venv/bin/python bench/capped_estimate.py --max-seconds 30

In process: the transformer of bench/transformer_model.py (5 layers, width 128, 4,096 examples of
8 tokens), trained 20 Adam steps, then ``estimate_llc`` with ``SGLDConfig(max_seconds=...)`` and
nothing else set. Prints the wall time of the whole call beside the cap, and where it went
(calibration, sampling, the rest). docs/benchmarks.md §5a.
"""
from __future__ import annotations

import argparse
import sys
import time

import common  # noqa: F401  (sets sys.path for the product)
import torch
import transformer_model as tm

from lambdascope.llc import SGLDConfig, estimate_llc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = tm.Transformer(vocab=64, context=8, width=128, layers=5, heads=4)
    x, y = tm.make_data(4096, 64, 8, seed=0)
    tm.train(model, x, y, steps=20, batch=256, seed=0)
    began = time.perf_counter()
    result = estimate_llc(model, x, y, tm.token_loss, SGLDConfig(max_seconds=args.max_seconds), device="cpu")
    wall = time.perf_counter() - began
    calibration = result.calibration.seconds if result.calibration else 0.0
    print(f"{sum(p.numel() for p in model.parameters())} parameters, max_seconds {args.max_seconds:g}: "
          f"{wall:.1f} s in all (calibration {calibration:.1f} s, sampling {result.sampling_seconds:.1f} s, "
          f"other {wall - calibration - result.sampling_seconds:.1f} s); {result.stopping.steps} steps per chain, "
          f"stopped: {result.stopping.reason}; {result.chain_plan.summary if result.chain_plan else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
