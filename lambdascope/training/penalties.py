"""Activation penalties added to the training loss.

L2 is the activation-L2 control for self-modeling (matched on training loss); L1 and the
half-decorrelation term are what make the gradient-routing autoencoder of Cloud et al. 2024
(arXiv 2410.04332) split its latent: sparse codes, and no information shared between the
two routed halves. Penalties read activations captured with `sites.capture`.

A penalty is a `CompiledPenalty` (site, kind, weight); the trainer service checks a TrainSpec's
`ActivationPenalty` messages against the model's sites and compiles them to these
(`services/trainer/translate.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# The penalty kinds `penalty_value` knows.
KINDS = ("l2", "l1", "half_decorrelation")

STD_EPS = 1e-8


@dataclass(frozen=True)
class CompiledPenalty:
    site: str
    kind: str
    weight: float


def penalty_value(kind: str, a: Tensor) -> Tensor:
    """The unweighted penalty of activations `a` ([batch, ...]) as a scalar."""
    if kind == "l2":
        return a.pow(2).mean()
    if kind == "l1":
        return a.abs().mean()
    if kind == "half_decorrelation":
        return half_decorrelation(a)
    raise ValueError(f"unknown penalty kind {kind!r}; known: {', '.join(KINDS)}")


def half_decorrelation(a: Tensor) -> Tensor:
    """mean |C| where C = Aᵀ B / batch is the correlation matrix between the first width//2
    units (A) and the rest (B) of `a` flattened to [batch, width], each column standardised
    over the batch (biased std, so C is Pearson's correlation up to the 1e-8 added to the
    std). A constant column contributes 0. A batch of one has no correlation: 0 (a constant)."""
    flat = a.reshape(a.shape[0], -1)
    if flat.shape[0] < 2:
        return flat.new_zeros(())
    z = (flat - flat.mean(0)) / (flat.std(0, correction=0) + STD_EPS)
    half = flat.shape[1] // 2
    corr = z[:, :half].T @ z[:, half:] / flat.shape[0]
    return corr.abs().mean()


def total_penalty(penalties: Sequence[CompiledPenalty], captured: Mapping[str, Tensor]) -> Tensor:
    """Σ weight · penalty_value(kind, captured[site]); 0 when there are no penalties."""
    missing = sorted({p.site for p in penalties} - captured.keys())
    if missing:
        raise ValueError(f"penalty sites {missing} were not captured in the forward pass")
    total = torch.zeros(())
    for p in penalties:
        total = total + p.weight * penalty_value(p.kind, captured[p.site])
    return total
