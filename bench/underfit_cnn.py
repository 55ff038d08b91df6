"""A default audit of an underfit CNN: w*'s slope and the early stop (not run by make test).
docs/benchmarks.md §4zt.

    .venv/bin/python bench/underfit_cnn.py                    # 30 epochs, 900 s cap, 2 threads

A 716-parameter CNN (two 3×3 convolutions, BatchNorm in eval mode, a residual connection,
adaptive average pooling, a linear head) on 4,000 random 12×12 images labelled by the quadrant
of largest energy, trained 30 epochs of Adam (lr 1e-3, batch 64) to a cross-entropy of about
1.38: far from a minimum. Then ``run_audit`` at the defaults, capped at --max-seconds; prints λ̂,
the slope's part of it, |∇L_n(w*)|, how the run stopped, the verdict and its reasons.
"""
from __future__ import annotations

import argparse
import math
import time

import common  # sets sys.path for the product
import torch
import torch.nn.functional as F
from torch import nn

from lambdascope.llc.audit import AuditSettings, run_audit
from lambdascope.llc.llc import SGLDConfig


class CNN(nn.Module):
    def __init__(self, channels: int = 8, classes: int = 4):
        super().__init__()
        self.c1 = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.c1(x)))
        h = h + F.relu(self.c2(h))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4000, 1, 12, 12, generator=gen)
    quadrants = [x[:, 0, :6, :6], x[:, 0, :6, 6:], x[:, 0, 6:, :6], x[:, 0, 6:, 6:]]
    return x, torch.stack([q.pow(2).mean((1, 2)) for q in quadrants], 1).argmax(1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-seconds", type=float, default=900.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = data()
    torch.manual_seed(2)
    model = CNN()
    common.train_classifier(model, x, y, torch.optim.Adam(model.parameters(), lr=1e-3), args.epochs)
    with torch.no_grad():
        loss = float(F.cross_entropy(model(x), y))
    print(f"{sum(p.numel() for p in model.parameters())} parameters, training loss {loss:.4f}", flush=True)
    began = time.perf_counter()
    audit = run_audit(model, x, y, F.cross_entropy, AuditSettings(SGLDConfig(max_seconds=args.max_seconds)),
                      device="cpu")
    llc = audit.llc
    slope = getattr(llc, "slope_term", math.nan)  # absent before the slope was measured
    print(f"λ̂ {llc.mean:.2f}, the slope's part {slope:+.2f}, |∇L_n(w*)| {getattr(llc, 'gradient_norm', math.nan):.3g}, "
          f"γ {llc.localization:.3g}, {llc.stopping.steps} steps ({llc.stopping.reason}), {audit.verdict.state}, "
          f"{time.perf_counter() - began:.0f} s")
    print(llc.stopping.summary)
    for reason in audit.verdict.reasons:
        print(" -", reason)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
