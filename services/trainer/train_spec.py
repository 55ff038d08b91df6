"""Translate a TrainSpec into the core's TrainConfig, and refuse what cannot work, early.

Used by the servicer before queuing and by the worker again, so both judge by the same rules.
Every message names the spec field at fault.
"""
from __future__ import annotations

import re

from lambdascope import architectures
from lambdascope.v1 import models_pb2, registry_pb2, trainer_pb2
from services.trainer import self_modeling
from services.trainer.training import TrainConfig

BUILTIN_DATASETS = ("digits",)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
LOSS_NAMES = {models_pb2.LOSS_KIND_MSE: "mse", models_pb2.LOSS_KIND_CROSS_ENTROPY: "cross_entropy"}


class SpecError(ValueError):
    """The spec cannot be trained as given; the message names the field."""


def train_config(spec: trainer_pb2.TrainSpec) -> TrainConfig:
    """Check `spec` on its own (no data yet) and build the core's config from it."""
    if not NAME.match(spec.model_name):
        raise SpecError(f"spec.model_name {spec.model_name!r} is not a valid name: use 1-200 "
                        "letters, digits, '.', '_' or '-'")
    try:
        architectures.validate_architecture(spec.architecture)
    except ValueError as exc:
        raise SpecError(f"spec.{exc}") from None
    source = spec.dataset.WhichOneof("source")
    if source is None:
        raise SpecError("spec.dataset needs builtin (one of "
                        f"{', '.join(BUILTIN_DATASETS)}) or dataset_id")
    if source == "builtin" and spec.dataset.builtin not in BUILTIN_DATASETS:
        raise SpecError(f"spec.dataset.builtin {spec.dataset.builtin!r} is unknown; "
                        f"available: {', '.join(BUILTIN_DATASETS)}")
    if not 0 <= spec.dataset.test_fraction < 1:
        raise SpecError(f"spec.dataset.test_fraction must be in [0, 1) "
                        f"(got {spec.dataset.test_fraction})")
    if spec.loss not in LOSS_NAMES:
        raise SpecError("spec.loss must be LOSS_KIND_CROSS_ENTROPY or LOSS_KIND_MSE")
    optimizer = spec.optimizer.kind or "adam"
    if optimizer not in DEFAULT_LR:
        raise SpecError(f"spec.optimizer.kind must be one of {sorted(DEFAULT_LR)} "
                        f"(got {optimizer!r})")
    layer = spec.self_modeling.layer
    if layer:
        try:
            self_modeling.check_layer(spec.architecture, layer)
        except ValueError as exc:
            raise SpecError(f"spec.{exc}") from None
    elif spec.self_modeling.weight:
        raise SpecError("spec.self_modeling.weight is set but spec.self_modeling.layer is not")
    config = TrainConfig(
        epochs=spec.epochs or 20, batch_size=spec.batch_size or 64,
        lr=spec.optimizer.learning_rate or DEFAULT_LR[optimizer], optimizer=optimizer,
        loss=LOSS_NAMES[spec.loss], task_outputs=output_width(spec.architecture),
        momentum=spec.optimizer.momentum, nesterov=spec.optimizer.nesterov,
        weight_decay=spec.optimizer.weight_decay, seed=spec.seed, self_model_layer=layer,
        self_model_weight=spec.self_modeling.weight,
        checkpoints=spec.checkpoints.count or 1)
    try:
        config.validate()
    except ValueError as exc:
        raise SpecError(f"spec: {exc}") from None
    return config


def model_architecture(spec: trainer_pb2.TrainSpec) -> models_pb2.Architecture:
    """The architecture actually trained: widened by the self-model outputs when enabled."""
    if spec.self_modeling.layer:
        return self_modeling.self_modeling_architecture(spec.architecture, spec.self_modeling.layer)
    return spec.architecture


def output_width(arch: models_pb2.Architecture) -> int:
    return architectures.io_shapes(arch)[1][-1]


def check_dataset(spec: trainer_pb2.TrainSpec, dataset: registry_pb2.Dataset) -> None:
    """Refuse a registry dataset whose x does not fit the architecture's input."""
    inputs = architectures.io_shapes(spec.architecture)[0][1:]
    if list(dataset.x_shape[1:]) != list(inputs):
        raise SpecError(f"spec.dataset.dataset_id: dataset x has shape {list(dataset.x_shape)} "
                        f"but the architecture takes [batch, {', '.join(map(str, inputs))}]")
