"""The deep-linear-network teacher the estimator tests sample around (w* = the teacher)."""
from __future__ import annotations

import math

import torch


def dln_teacher(widths: tuple[int, ...], rank: int, seed: int = 0) -> torch.nn.Sequential:
    """Bias-free linear layers with N(0, 1/fan_in) weights; the first layer's rank cut to ``rank``."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        w = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)
        if i == 0:
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            w = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
        layer = torch.nn.Linear(fan_in, fan_out, bias=False, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(w)
        layers.append(layer)
    return torch.nn.Sequential(*layers)
