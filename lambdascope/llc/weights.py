"""Per-tensor weight statistics and the model's parameter groups (for per-layer, restricted LLC).

Works on ordinary modules and on ``torch.export`` programs alike: ``ExportedProgram.module()``
keeps the original parameter names (``layers.0.weight``, ``0.bias``, ``scale``), re-creating
the submodule hierarchy, so both are grouped the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["WeightStatistics", "layer_groups", "weight_statistics"]


@dataclass
class WeightStatistics:
    name: str  # parameter name, as in model.named_parameters()
    numel: int
    mean: float
    std: float  # population std (ddof = 0), the same moments the kurtosis uses
    # EXCESS kurtosis m4 / m2² − 3: 0 for a Gaussian, −1.2 uniform, > 0 heavy tails; nan if std = 0
    kurtosis: float


def _stats(name: str, t: torch.Tensor) -> WeightStatistics:
    w = t.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    n = w.numel()
    if n == 0:
        return WeightStatistics(name, 0, math.nan, math.nan, math.nan)
    mean = w.mean().item()
    centered = w - mean
    m2 = centered.square().mean().item()
    m4 = centered.pow(4).mean().item()
    kurtosis = m4 / (m2 * m2) - 3.0 if m2 > 0 else math.nan
    return WeightStatistics(name, n, mean, math.sqrt(m2), kurtosis)


def weight_statistics(model: torch.nn.Module) -> list[WeightStatistics]:
    """Mean, std and excess kurtosis of every floating-point parameter tensor, in model order.

    Shared (tied) parameters appear once, under their first name. Integer parameters are skipped.
    """
    return [_stats(name, p) for name, p in model.named_parameters() if p.is_floating_point()]


def layer_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """Each module that directly owns parameters → the full names of its parameters.

    E.g. ``{"layers.0": ["layers.0.weight", "layers.0.bias"], ...}``, in model order. Parameters
    owned by the root module itself are grouped under ``""``. A tied parameter is listed once,
    under the module of its first name (as ``named_parameters`` reports it).
    """
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        owner = name.rpartition(".")[0]
        groups.setdefault(owner, []).append(name)
    return groups
