"""Translate a TrainSpec into the training library's TrainConfig, and refuse what cannot work, early.

Used by the servicer before queuing (with what is known about the data without loading it) and
by the worker again with the data in hand, so both judge by the same rules. Every message names
the spec field at fault.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from lambdascope import architectures, artifacts, enums
from lambdascope.enums import LOSS_NAMES
from lambdascope.names import RECORD as NAME
from lambdascope.v1 import models_pb2, registry_pb2, trainer_pb2
from lambdascope.training.loop import NoiseConfig, Schedule, TrainConfig
from services.trainer import translate

BUILTIN_DATASETS = ("digits",)
DIGITS_ROWS, DIGITS_CLASSES, DIGITS_FEATURES = 1797, 10, 64
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
SCHEDULE_NAMES = {trainer_pb2.SCHEDULE_KIND_UNSPECIFIED: "constant",
                  trainer_pb2.SCHEDULE_KIND_CONSTANT: "constant",
                  trainer_pb2.SCHEDULE_KIND_COSINE: "cosine", trainer_pb2.SCHEDULE_KIND_STEP: "step"}
NOISE_NAMES = {trainer_pb2.NOISE_KIND_PGD: "pgd", trainer_pb2.NOISE_KIND_ANTI_PGD: "anti_pgd"}
DISTRIBUTION_NAMES = {trainer_pb2.NOISE_DISTRIBUTION_UNSPECIFIED: "gaussian",
                      trainer_pb2.NOISE_DISTRIBUTION_GAUSSIAN: "gaussian",
                      trainer_pb2.NOISE_DISTRIBUTION_RADEMACHER: "rademacher"}
# Synthetic sources that draw their own test set (a test_fraction would contradict them).
OWN_TEST_SET = ("dln_teacher", "quadratic_regression")
MAX_STEPS = 100_000_000
# Unknown data (a registry dataset before it is loaded): checks that need it wait for the worker.
_UNKNOWN = 2**62


class SpecError(ValueError):
    """The spec cannot be trained as given; the message names the field."""


@dataclass(frozen=True)
class DataFacts:
    """What the spec's data looks like, as far as it is known (None: not known yet)."""

    rows: int | None
    classes: int | None  # number of class labels; None for regression data or unknown
    tokens: int | None = None  # token ids the inputs use (largest + 1); None: float or unknown


def data_facts(spec: trainer_pb2.TrainSpec) -> DataFacts:
    source = spec.dataset.WhichOneof("source")
    if source == "builtin":
        return DataFacts(DIGITS_ROWS, DIGITS_CLASSES)
    if source == "modular_addition":
        p = spec.dataset.modular_addition.modulus or 53
        return DataFacts(p * p, p, p if takes_token_ids(spec.architecture) else None)
    if source == "dln_teacher":
        return DataFacts(spec.dataset.dln_teacher.examples or 10_000, None)
    if source == "quadratic_regression":
        return DataFacts(spec.dataset.quadratic_regression.examples or 40, None)
    return DataFacts(None, None)


def train_config(spec: trainer_pb2.TrainSpec, facts: DataFacts | None = None) -> TrainConfig:
    """Check `spec` and build the library's config. `facts` (default: what the spec itself tells)
    sharpen the routing and vocabulary checks once the data is loaded."""
    if not NAME.match(spec.model_name):
        raise SpecError(f"spec.model_name {spec.model_name!r} is not a valid name: use 1-200 "
                        "letters, digits, '.', '_' or '-'")
    arch = _architecture(spec)
    facts = facts or data_facts(spec)
    _check_dataset_spec(spec)
    _check_vocabulary(arch, facts)
    if spec.loss not in LOSS_NAMES:
        raise SpecError(f"spec.loss must be {enums.one_of(models_pb2.LossKind)}")
    reconstruct = architectures.reconstructs_input(arch)
    if reconstruct and spec.loss == models_pb2.LOSS_KIND_CROSS_ENTROPY:
        raise SpecError("spec.loss: an autoencoder reconstructs its input; use LOSS_KIND_MSE "
                        "or LOSS_KIND_MAE")
    optimizer = spec.optimizer.kind or "adam"
    if optimizer not in DEFAULT_LR:
        raise SpecError(f"spec.optimizer.kind must be one of {sorted(DEFAULT_LR)} "
                        f"(got {optimizer!r})")
    if spec.epochs < 0 or spec.steps < 0 or (spec.epochs and spec.steps):
        raise SpecError("spec.epochs and spec.steps: give one of them (or neither, for 20 "
                        f"epochs), not negative values (got epochs={spec.epochs}, "
                        f"steps={spec.steps})")
    if spec.steps > MAX_STEPS:
        raise SpecError(f"spec.steps must be at most {MAX_STEPS:,}, got {spec.steps:,}")
    if spec.batch_size < 0:
        raise SpecError(f"spec.batch_size must be positive (0 means 64), got {spec.batch_size}")
    sites = architectures.sites(arch)
    site = _self_model_site(spec, arch)
    try:
        compiled_penalties = translate.compile_penalties(list(spec.penalties), sites)
        compiled_routing = translate.compile_routing(
            spec.routing, sites, num_rows=facts.rows or _UNKNOWN,
            num_classes=facts.classes if facts.rows is not None else _UNKNOWN)
    except ValueError as exc:
        raise SpecError(f"spec.{exc}") from None
    config = TrainConfig(
        epochs=0 if spec.steps else (spec.epochs or 20), steps=spec.steps,
        batch_size=spec.batch_size or 64,
        lr=spec.optimizer.learning_rate or DEFAULT_LR[optimizer], optimizer=optimizer,
        loss=LOSS_NAMES[spec.loss], task_outputs=architectures.io_shapes(spec.architecture)[1][-1],
        momentum=spec.optimizer.momentum, nesterov=spec.optimizer.nesterov,
        weight_decay=spec.optimizer.weight_decay, seed=spec.seed,
        self_model_site=site, self_model_weight=spec.self_modeling.weight,
        penalties=tuple(compiled_penalties), routing=tuple(compiled_routing),
        noise=_noise(spec.optimizer.noise), schedule=_schedule(spec.optimizer.schedule),
        reconstruct=reconstruct, checkpoints=spec.checkpoints.count or 1,
        checkpoint_at=tuple(spec.checkpoints.steps))
    try:
        config.validate()
    except ValueError as exc:
        field = str(exc).split(" ", 1)[0]
        prefix = "spec.optimizer." if field.startswith(("noise.", "schedule.")) else "spec: "
        raise SpecError(f"{prefix}{exc}") from None
    return config


def takes_token_ids(arch: models_pb2.Architecture) -> bool:
    """Whether the architecture reads integer token ids (a transformer) rather than floats."""
    return architectures.input_dtype(arch) == "int64"


def model_architecture(spec: trainer_pb2.TrainSpec) -> models_pb2.Architecture:
    """The architecture actually trained: widened by the self-model outputs when enabled."""
    if spec.self_modeling.layer:
        return translate.self_modeling_architecture(spec.architecture, spec.self_modeling.layer)
    return spec.architecture


def check_dataset(spec: trainer_pb2.TrainSpec, dataset: registry_pb2.Dataset) -> None:
    """Refuse a registry dataset whose x does not fit the architecture's input."""
    inputs = architectures.io_shapes(spec.architecture)[0][1:]
    if list(dataset.x_shape[1:]) != list(inputs):
        raise SpecError(f"spec.dataset.dataset_id: dataset x has shape {list(dataset.x_shape)} "
                        f"but the architecture takes [batch, {', '.join(map(str, inputs))}]")
    ids = dataset.x_dtype in artifacts.ID_DTYPES
    kind = architectures.architecture_kind(spec.architecture)
    if takes_token_ids(spec.architecture) and not ids:
        raise SpecError(f"spec.dataset.dataset_id: dataset x is {dataset.x_dtype} but "
                        f"architecture.{kind} takes integer token ids")
    if ids and not takes_token_ids(spec.architecture):
        raise SpecError(f"spec.dataset.dataset_id: dataset x holds integer ids "
                        f"({dataset.x_dtype}) but architecture.{kind} takes floating-point "
                        "inputs (architecture.transformer reads token ids)")


def _architecture(spec: trainer_pb2.TrainSpec) -> models_pb2.Architecture:
    if spec.architecture.WhichOneof("kind") is None:
        raise SpecError("spec.architecture is not set: choose mlp, dln, convnet, autoencoder, "
                        "quadratic or transformer")
    try:
        architectures.validate_architecture(spec.architecture)
    except ValueError as exc:
        raise SpecError(f"spec.{exc}") from None
    return spec.architecture


def _check_dataset_spec(spec: trainer_pb2.TrainSpec) -> None:
    source = spec.dataset.WhichOneof("source")
    if source is None:
        raise SpecError("spec.dataset needs one of builtin (" + ", ".join(BUILTIN_DATASETS)
                        + "), dataset_id, dln_teacher, quadratic_regression or modular_addition")
    if source == "builtin" and spec.dataset.builtin not in BUILTIN_DATASETS:
        raise SpecError(f"spec.dataset.builtin {spec.dataset.builtin!r} is unknown; "
                        f"available: {', '.join(BUILTIN_DATASETS)}")
    fraction = spec.dataset.test_fraction
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise SpecError(f"spec.dataset.test_fraction must be in [0, 1) (got {fraction})")
    if source in OWN_TEST_SET and fraction:
        raise SpecError(f"spec.dataset.test_fraction: {source} draws its own test set "
                        f"(set {source}.test_examples instead)")
    if takes_token_ids(spec.architecture):
        _check_token_source(spec, source)
        return
    inputs = architectures.io_shapes(spec.architecture)[0][1:]
    width = {"builtin": lambda _: DIGITS_FEATURES,
             "dln_teacher": lambda d: d.widths[0] if d.widths else None,
             "quadratic_regression": lambda d: d.dim or 100,
             "modular_addition": lambda d: 2 * (d.modulus or 53)}.get(source)
    if width is not None:
        given = width(getattr(spec.dataset, source))
        if given is not None and [given] != list(inputs):
            raise SpecError(f"spec.dataset.{source}: the data has {given} input features but "
                            f"the architecture takes [batch, {', '.join(map(str, inputs))}]")


def _check_token_source(spec: trainer_pb2.TrainSpec, source: str) -> None:
    """Token ids come from modular_addition (whose sizes the transformer must match exactly)
    or a registry dataset (checked by `check_dataset`); the other sources give floats."""
    if source == "dataset_id":
        return
    if source != "modular_addition":
        raise SpecError(f"spec.dataset.{source}: architecture.transformer takes token ids, which "
                        "this source does not give; use modular_addition or a registry "
                        "dataset_id whose x holds integer ids")
    p = spec.dataset.modular_addition.modulus or 53
    want = {"vocab_size": p, "context": 2, "outputs": p}
    got = {name: getattr(spec.architecture.transformer, name) for name in want}
    if got != want:
        setting = ", ".join(f"{k}: {v}" for k, v in want.items())
        given = ", ".join(f"{k}: {v}" for k, v in got.items())
        raise SpecError(f"spec.architecture.transformer: modular_addition with modulus {p} gives "
                        f"token ids 0..{p - 1} at 2 positions and {p} classes; set "
                        f"{{{setting}}} (got {{{given}}})")


def _check_vocabulary(arch: models_pb2.Architecture, facts: DataFacts) -> None:
    if facts.tokens is None or not takes_token_ids(arch):
        return
    vocab = arch.transformer.vocab_size
    if facts.tokens > vocab:
        raise SpecError(f"spec.architecture.transformer.vocab_size: the data has token ids up "
                        f"to {facts.tokens - 1}; set vocab_size to at least {facts.tokens} "
                        f"(got {vocab})")


def _self_model_site(spec: trainer_pb2.TrainSpec, arch: models_pb2.Architecture) -> str:
    layer = spec.self_modeling.layer
    if not layer:
        if spec.self_modeling.weight:
            raise SpecError("spec.self_modeling.weight is set but spec.self_modeling.layer is not")
        return ""
    try:
        return architectures.hidden_site(arch, layer)
    except ValueError as exc:
        raise SpecError(f"spec.{exc}") from None


def _noise(noise: trainer_pb2.NoiseInjection) -> NoiseConfig | None:
    if noise.kind == trainer_pb2.NOISE_KIND_UNSPECIFIED:
        if noise.sigma or noise.stop_step or noise.distribution:
            raise SpecError("spec.optimizer.noise: sigma, distribution or stop_step is set but "
                            "noise.kind is not (NOISE_KIND_PGD or NOISE_KIND_ANTI_PGD)")
        return None
    if noise.kind not in NOISE_NAMES:
        raise SpecError(f"spec.optimizer.noise.kind has unknown value {noise.kind}")
    if noise.distribution not in DISTRIBUTION_NAMES:
        raise SpecError(f"spec.optimizer.noise.distribution has unknown value {noise.distribution}")
    return NoiseConfig(kind=NOISE_NAMES[noise.kind], sigma=noise.sigma,
                       distribution=DISTRIBUTION_NAMES[noise.distribution],
                       stop_step=noise.stop_step)


def _schedule(schedule: trainer_pb2.ScheduleSpec) -> Schedule:
    if schedule.kind not in SCHEDULE_NAMES:
        raise SpecError(f"spec.optimizer.schedule.kind has unknown value {schedule.kind}")
    return Schedule(kind=SCHEDULE_NAMES[schedule.kind], warmup_steps=schedule.warmup_steps,
                    step_every=schedule.step_every, gamma=schedule.gamma or 1.0)
