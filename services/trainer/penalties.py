"""Activation penalties added to the training loss.

L2 is the activation-L2 control for self-modeling (matched on training loss); L1 and the
half-decorrelation term are what make the gradient-routing autoencoder of Cloud et al. 2024
(arXiv 2410.04332) split its latent: sparse codes, and no information shared between the
two routed halves. Penalties read activations captured with `sites.capture`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lambdascope.v1 import trainer_pb2

PENALTY_KINDS = {
    trainer_pb2.PENALTY_KIND_L2: "l2",
    trainer_pb2.PENALTY_KIND_L1: "l1",
    trainer_pb2.PENALTY_KIND_HALF_DECORRELATION: "half_decorrelation",
}

STD_EPS = 1e-8


@dataclass(frozen=True)
class CompiledPenalty:
    site: str
    kind: str
    weight: float


def compile_penalties(
    specs: Sequence[trainer_pb2.ActivationPenalty], site_shapes: Mapping[str, tuple[int, ...]]
) -> list[CompiledPenalty]:
    """Validate against the model's sites (per-example shapes). ValueError messages start
    with the offending field, e.g. 'penalties[0].site'."""
    compiled = []
    for i, spec in enumerate(specs):
        where = f"penalties[{i}]"
        if spec.site not in site_shapes:
            raise ValueError(
                f"{where}.site: unknown site {spec.site!r}; "
                f"known sites: {', '.join(site_shapes) or 'none'}"
            )
        if spec.kind not in PENALTY_KINDS:
            raise ValueError(
                f"{where}.kind must be one of "
                f"{', '.join(trainer_pb2.PenaltyKind.Name(k) for k in PENALTY_KINDS)}, "
                f"got {spec.kind}"
            )
        if not (math.isfinite(spec.weight) and spec.weight >= 0):
            raise ValueError(f"{where}.weight must be finite and >= 0, got {spec.weight}")
        kind = PENALTY_KINDS[spec.kind]
        units = math.prod(site_shapes[spec.site])
        if kind == "half_decorrelation" and units < 2:
            raise ValueError(
                f"{where}.site: half_decorrelation needs a site with at least 2 units, "
                f"{spec.site!r} has {units}"
            )
        compiled.append(CompiledPenalty(site=spec.site, kind=kind, weight=spec.weight))
    return compiled


def penalty_value(kind: str, a: Tensor) -> Tensor:
    """The unweighted penalty of activations `a` ([batch, ...]) as a scalar."""
    if kind == "l2":
        return a.pow(2).mean()
    if kind == "l1":
        return a.abs().mean()
    if kind == "half_decorrelation":
        return half_decorrelation(a)
    raise ValueError(f"unknown penalty kind {kind!r}; known: {', '.join(PENALTY_KINDS.values())}")


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
