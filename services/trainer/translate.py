"""The trainer's protobuf messages in the terms of the training library (lambdascope.training).

The library takes plain dataclasses and arguments; what reads a TrainSpec's messages is here:
activation penalties and gradient-routing specs checked against the model's sites and
compiled to the library's `CompiledPenalty` / `CompiledRule` (ValueError messages start with
the spec field at fault), the synthetic-data messages passed to the library's generators, and
self-modeling on an `Architecture` message (the widened network, its task network, paired
initial weights; see lambdascope.training.self_modeling for the objective).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from lambdascope import architectures, modules
from lambdascope.training import datasets
from lambdascope.training.datasets import TrainingData
from lambdascope.training.penalties import CompiledPenalty
from lambdascope.training.routing import CompiledGroup, CompiledRule
from lambdascope.v1 import models_pb2, trainer_pb2


# --------------------------------------------------------------------------------------
# Activation penalties (lambdascope.training.penalties).

PENALTY_KINDS = {
    trainer_pb2.PENALTY_KIND_L2: "l2",
    trainer_pb2.PENALTY_KIND_L1: "l1",
    trainer_pb2.PENALTY_KIND_HALF_DECORRELATION: "half_decorrelation",
}


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


# --------------------------------------------------------------------------------------
# Gradient routing (lambdascope.training.routing).


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


# --------------------------------------------------------------------------------------
# Self-modeling on an Architecture message (lambdascope.training.self_modeling).


def self_modeling_architecture(arch: models_pb2.Architecture, layer: int) -> models_pb2.Architecture:
    """A copy of `arch` whose output layer is widened by the width of hidden layer `layer`."""
    architectures.hidden_site(arch, layer)  # ValueError naming self_modeling.layer
    return architectures.widen_outputs(arch, architectures.hidden_dims(arch)[layer - 1])


def task_architecture(arch: models_pb2.Architecture, task_outputs: int) -> models_pb2.Architecture:
    """Inverse of `self_modeling_architecture`: the output layer cut to `task_outputs`."""
    return architectures.narrow_outputs(arch, task_outputs)


def task_state_dict(
    state: dict[str, torch.Tensor], arch: models_pb2.Architecture, task_outputs: int
) -> dict[str, torch.Tensor]:
    """Weights with the self-model rows of the output layer removed, matching
    `task_architecture(arch, task_outputs)`."""
    return modules.narrow_weights(arch, state, task_outputs)


def paired_init(module: torch.nn.Module, arch: models_pb2.Architecture, task_outputs: int,
                seed: int) -> None:
    """Give a self-modeling network the initial weights the plain network gets from the same
    seed (the self-model head's extra rows keep their own), so the two runs are paired."""
    plain = modules.build_module(task_architecture(arch, task_outputs), seed=seed)
    widened = module.state_dict()
    last = architectures.output_layer(arch)
    with torch.no_grad():
        for name, tensor in plain.state_dict().items():
            if name.startswith(last + "."):
                widened[name][:task_outputs].copy_(tensor)
            else:
                widened[name].copy_(tensor)


# --------------------------------------------------------------------------------------
# Synthetic data: the message's fields are the generator's arguments (0 meaning the default).


def dln_teacher(data: trainer_pb2.DLNTeacherData) -> TrainingData:
    return datasets.dln_teacher(list(data.widths), rank=data.rank, examples=data.examples,
                                test_examples=data.test_examples, input_range=data.input_range,
                                noise_std=data.noise_std, seed=data.seed)


def quadratic_regression(data: trainer_pb2.QuadraticRegressionData) -> TrainingData:
    return datasets.quadratic_regression(dim=data.dim, support=data.support,
                                         examples=data.examples,
                                         test_examples=data.test_examples, seed=data.seed)


def modular_addition(data: trainer_pb2.ModularAdditionData, *, tokens: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    return datasets.modular_addition(data.modulus, tokens=tokens)
