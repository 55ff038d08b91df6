"""Gradient routing (Cloud et al. 2024, arXiv 2410.04332).

At an activation site, a' = m ⊙ a + (1 − m) ⊙ a.detach() with a per-example mask m chosen
from the example's class label or dataset row (never learned). The forward value is a; the
gradient reaching a is m ⊙ (incoming gradient), so each group of examples can only update
the part of the network upstream of the units its mask leaves open. Weights may be any real
number: 0 blocks, 1 passes, −0.75 passes the gradient scaled by −0.75.

A `GradientRoutingSpec` is validated and compiled once (`compile_routing`); per batch,
`routing_transforms` gives the transforms for `sites.intercept`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lambdascope.v1 import trainer_pb2


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
    """One validated `RouteGroup`: exactly one of `labels` / `rows` is set; `mask` has one
    weight per unit (channel) of the site."""

    labels: tuple[int, ...] | None
    rows: tuple[int, int] | None
    mask: tuple[float, ...]


@dataclass(frozen=True)
class CompiledRule:
    site: str
    width: int
    groups: tuple[CompiledGroup, ...]


def compile_routing(
    spec: trainer_pb2.GradientRoutingSpec,
    site_shapes: Mapping[str, tuple[int, ...]],
    *,
    num_rows: int,
    num_classes: int | None,
) -> list[CompiledRule]:
    """Validate `spec` against the model's sites (per-example shapes; width = shape[0], i.e.
    units or channels) and the dataset (`num_rows`; `num_classes` None when it has no class
    labels). ValueError messages start with the offending field, e.g. 'routing.rules[0].site'."""
    rules: list[CompiledRule] = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(spec.rules):
        where = f"routing.rules[{i}]"
        width = site_width(rule.site, site_shapes, f"{where}.site")
        if rule.site in seen:
            raise ValueError(
                f"{where}.site: site {rule.site!r} is already routed by "
                f"routing.rules[{seen[rule.site]}]"
            )
        seen[rule.site] = i
        if not rule.groups:
            raise ValueError(f"{where}.groups: a rule needs at least one group")
        groups = tuple(
            compile_group(group, f"{where}.groups[{j}]", width, num_rows, num_classes)
            for j, group in enumerate(rule.groups)
        )
        rules.append(CompiledRule(site=rule.site, width=width, groups=groups))
    return rules


def site_width(site: str, site_shapes: Mapping[str, tuple[int, ...]], where: str) -> int:
    if site not in site_shapes:
        raise ValueError(
            f"{where}: unknown site {site!r}; known sites: {', '.join(site_shapes) or 'none'}"
        )
    shape = site_shapes[site]
    if not shape:
        raise ValueError(f"{where}: site {site!r} has no unit or channel dimension to route")
    return shape[0]


def compile_group(
    group: trainer_pb2.RouteGroup,
    where: str,
    width: int,
    num_rows: int,
    num_classes: int | None,
) -> CompiledGroup:
    select = group.WhichOneof("select")
    if select is None:
        raise ValueError(f"{where}: the group has no selector (set labels or rows)")
    labels, rows = None, None
    if select == "labels":
        labels = compile_labels(group.labels, f"{where}.labels", num_classes)
    else:
        rows = compile_rows(group.rows, f"{where}.rows", num_rows)
    mask_spec = group.WhichOneof("mask_spec")
    if mask_spec is None:
        raise ValueError(f"{where}: the group has no mask (set units or values)")
    if mask_spec == "units":
        mask = compile_units(group.units, f"{where}.units", width)
    else:
        mask = compile_values(group.values, f"{where}.values", width)
    return CompiledGroup(labels=labels, rows=rows, mask=mask)


def compile_labels(
    labels: trainer_pb2.LabelSet, where: str, num_classes: int | None
) -> tuple[int, ...]:
    if num_classes is None:
        raise ValueError(f"{where}: the task has no class labels; select by rows instead")
    if not labels.labels:
        raise ValueError(f"{where}.labels: the label set is empty")
    outside = [label for label in labels.labels if not 0 <= label < num_classes]
    if outside:
        raise ValueError(f"{where}.labels: labels {outside} are outside 0..{num_classes - 1}")
    return tuple(labels.labels)


def compile_rows(rows: trainer_pb2.RowRange, where: str, num_rows: int) -> tuple[int, int]:
    if rows.start < 0:
        raise ValueError(f"{where}.start must be >= 0, got {rows.start}")
    if rows.start >= rows.stop:
        raise ValueError(f"{where}: start {rows.start} must be < stop {rows.stop}")
    if rows.stop > num_rows:
        raise ValueError(f"{where}.stop {rows.stop} is beyond the dataset's {num_rows} rows")
    return rows.start, rows.stop


def compile_units(units: trainer_pb2.UnitRange, where: str, width: int) -> tuple[float, ...]:
    if not 0 <= units.start < units.stop <= width:
        raise ValueError(
            f"{where}: [start, stop) = [{units.start}, {units.stop}) must satisfy "
            f"0 <= start < stop <= {width} (the site's width)"
        )
    if not math.isfinite(units.weight):
        raise ValueError(f"{where}.weight must be finite, got {units.weight}")
    weight = units.weight or 1.0
    return tuple(weight if units.start <= u < units.stop else 0.0 for u in range(width))


def compile_values(values: trainer_pb2.MaskValues, where: str, width: int) -> tuple[float, ...]:
    if len(values.values) != width:
        raise ValueError(
            f"{where}.values: expected {width} values (the site's width), got {len(values.values)}"
        )
    if not all(math.isfinite(v) for v in values.values):
        raise ValueError(f"{where}.values: every value must be finite")
    return tuple(values.values)


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
