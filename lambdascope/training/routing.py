"""Gradient routing (Cloud et al. 2024, arXiv 2410.04332).

At an activation site, a' = m ⊙ a + (1 − m) ⊙ a.detach() with a per-example mask m chosen
from the example's class label or dataset row (never learned). The forward value is a; the
gradient reaching a is m ⊙ (incoming gradient), so each group of examples can only update
the part of the network upstream of the units its mask leaves open. Weights may be any real
number: 0 blocks, 1 passes, −0.75 passes the gradient scaled by −0.75.

A rule is a `CompiledRule`: the site, its width and per-example groups with their masks. The
trainer service validates a TrainSpec's `GradientRoutingSpec` and compiles it to these once
(`compile_routing` in services/trainer/translate.py); per batch, `routing_transforms` gives the
transforms for `sites.intercept`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def route(a: Tensor, mask: Tensor) -> Tensor:
    """a' = m ⊙ a + (1 − m) ⊙ a.detach(), computed as a.detach() + m ⊙ (a − a.detach()) so
    that the forward value is bitwise a (for finite a) and the gradient reaching a is exactly
    m ⊙ (incoming gradient). `mask` is [batch, C]: per unit for a [batch, C] site, per channel
    for a [batch, C, ...] site; it is cast to a's dtype and device."""
    if a.ndim < 2 or mask.shape != a.shape[:2]:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match activations of shape "
            f"{tuple(a.shape)} (expected [batch, units or channels])"
        )
    m = mask.to(dtype=a.dtype, device=a.device).reshape(*mask.shape, *[1] * (a.ndim - 2))
    frozen = a.detach()
    return frozen + m * (a - frozen)


@dataclass(frozen=True)
class CompiledGroup:
    """One routing group: exactly one of `labels` / `rows` is set; `mask` has one weight per
    unit (channel) of the site."""

    labels: tuple[int, ...] | None
    rows: tuple[int, int] | None
    mask: tuple[float, ...]


@dataclass(frozen=True)
class CompiledRule:
    site: str
    width: int
    groups: tuple[CompiledGroup, ...]


def masks(rule: CompiledRule, labels: Tensor | None, rows: Tensor) -> Tensor:
    """Per-example masks [batch, width] (float64; `route` casts them): the first group that
    selects an example decides its mask; an example no group selects gets all-ones (ordinary
    backprop). `labels`: int64 [batch] class labels, None when the task has none; `rows`:
    int64 [batch], each example's row in the dataset as given (before the train/test split)."""
    out = torch.ones(rows.shape[0], rule.width, dtype=torch.float64, device=rows.device)
    decided = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    for group in rule.groups:
        chosen = selects(group, labels, rows) & ~decided
        out[chosen] = torch.tensor(group.mask, dtype=torch.float64, device=rows.device)
        decided |= chosen
    return out


def selects(group: CompiledGroup, labels: Tensor | None, rows: Tensor) -> Tensor:
    if group.rows is not None:
        start, stop = group.rows
        return (rows >= start) & (rows < stop)
    if labels is None:
        raise ValueError("this routing rule selects by label but the batch has no labels")
    return torch.isin(labels, torch.tensor(group.labels, device=labels.device))


def routing_transforms(
    rules: Sequence[CompiledRule], labels: Tensor | None, rows: Tensor
) -> dict[str, Callable[[Tensor], Tensor]]:
    """For `sites.intercept`: site -> (a -> route(a, masks(rule, labels, rows)))."""
    return {
        rule.site: functools.partial(route, mask=masks(rule, labels, rows)) for rule in rules
    }
