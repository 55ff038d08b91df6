from lambdascope.v1 import access_pb2 as _access_pb2
from lambdascope.v1 import jobs_pb2 as _jobs_pb2
from lambdascope.v1 import models_pb2 as _models_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScheduleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULE_KIND_UNSPECIFIED: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_CONSTANT: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_COSINE: _ClassVar[ScheduleKind]
    SCHEDULE_KIND_STEP: _ClassVar[ScheduleKind]

class NoiseKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOISE_KIND_UNSPECIFIED: _ClassVar[NoiseKind]
    NOISE_KIND_PGD: _ClassVar[NoiseKind]
    NOISE_KIND_ANTI_PGD: _ClassVar[NoiseKind]

class NoiseDistribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOISE_DISTRIBUTION_UNSPECIFIED: _ClassVar[NoiseDistribution]
    NOISE_DISTRIBUTION_GAUSSIAN: _ClassVar[NoiseDistribution]
    NOISE_DISTRIBUTION_RADEMACHER: _ClassVar[NoiseDistribution]

class PenaltyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PENALTY_KIND_UNSPECIFIED: _ClassVar[PenaltyKind]
    PENALTY_KIND_L2: _ClassVar[PenaltyKind]
    PENALTY_KIND_L1: _ClassVar[PenaltyKind]
    PENALTY_KIND_HALF_DECORRELATION: _ClassVar[PenaltyKind]
SCHEDULE_KIND_UNSPECIFIED: ScheduleKind
SCHEDULE_KIND_CONSTANT: ScheduleKind
SCHEDULE_KIND_COSINE: ScheduleKind
SCHEDULE_KIND_STEP: ScheduleKind
NOISE_KIND_UNSPECIFIED: NoiseKind
NOISE_KIND_PGD: NoiseKind
NOISE_KIND_ANTI_PGD: NoiseKind
NOISE_DISTRIBUTION_UNSPECIFIED: NoiseDistribution
NOISE_DISTRIBUTION_GAUSSIAN: NoiseDistribution
NOISE_DISTRIBUTION_RADEMACHER: NoiseDistribution
PENALTY_KIND_UNSPECIFIED: PenaltyKind
PENALTY_KIND_L2: PenaltyKind
PENALTY_KIND_L1: PenaltyKind
PENALTY_KIND_HALF_DECORRELATION: PenaltyKind

class DatasetSpec(_message.Message):
    __slots__ = ("builtin", "dataset_id", "dln_teacher", "quadratic_regression", "modular_addition", "test_fraction")
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DLN_TEACHER_FIELD_NUMBER: _ClassVar[int]
    QUADRATIC_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    MODULAR_ADDITION_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    builtin: str
    dataset_id: str
    dln_teacher: DLNTeacherData
    quadratic_regression: QuadraticRegressionData
    modular_addition: ModularAdditionData
    test_fraction: float
    def __init__(self, builtin: _Optional[str] = ..., dataset_id: _Optional[str] = ..., dln_teacher: _Optional[_Union[DLNTeacherData, _Mapping]] = ..., quadratic_regression: _Optional[_Union[QuadraticRegressionData, _Mapping]] = ..., modular_addition: _Optional[_Union[ModularAdditionData, _Mapping]] = ..., test_fraction: _Optional[float] = ...) -> None: ...

class DLNTeacherData(_message.Message):
    __slots__ = ("widths", "rank", "examples", "test_examples", "input_range", "noise_std", "seed")
    WIDTHS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEST_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    INPUT_RANGE_FIELD_NUMBER: _ClassVar[int]
    NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    widths: _containers.RepeatedScalarFieldContainer[int]
    rank: int
    examples: int
    test_examples: int
    input_range: float
    noise_std: float
    seed: int
    def __init__(self, widths: _Optional[_Iterable[int]] = ..., rank: _Optional[int] = ..., examples: _Optional[int] = ..., test_examples: _Optional[int] = ..., input_range: _Optional[float] = ..., noise_std: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class QuadraticRegressionData(_message.Message):
    __slots__ = ("dim", "support", "examples", "test_examples", "seed")
    DIM_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEST_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    dim: int
    support: int
    examples: int
    test_examples: int
    seed: int
    def __init__(self, dim: _Optional[int] = ..., support: _Optional[int] = ..., examples: _Optional[int] = ..., test_examples: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ModularAdditionData(_message.Message):
    __slots__ = ("modulus", "seed")
    MODULUS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    modulus: int
    seed: int
    def __init__(self, modulus: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ScheduleSpec(_message.Message):
    __slots__ = ("kind", "warmup_steps", "step_every", "gamma")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_EVERY_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    kind: ScheduleKind
    warmup_steps: int
    step_every: int
    gamma: float
    def __init__(self, kind: _Optional[_Union[ScheduleKind, str]] = ..., warmup_steps: _Optional[int] = ..., step_every: _Optional[int] = ..., gamma: _Optional[float] = ...) -> None: ...

class NoiseInjection(_message.Message):
    __slots__ = ("kind", "distribution", "sigma", "stop_step")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    STOP_STEP_FIELD_NUMBER: _ClassVar[int]
    kind: NoiseKind
    distribution: NoiseDistribution
    sigma: float
    stop_step: int
    def __init__(self, kind: _Optional[_Union[NoiseKind, str]] = ..., distribution: _Optional[_Union[NoiseDistribution, str]] = ..., sigma: _Optional[float] = ..., stop_step: _Optional[int] = ...) -> None: ...

class OptimizerSpec(_message.Message):
    __slots__ = ("kind", "learning_rate", "momentum", "nesterov", "weight_decay", "schedule", "noise")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: ScheduleSpec
    noise: NoiseInjection
    def __init__(self, kind: _Optional[str] = ..., learning_rate: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., weight_decay: _Optional[float] = ..., schedule: _Optional[_Union[ScheduleSpec, _Mapping]] = ..., noise: _Optional[_Union[NoiseInjection, _Mapping]] = ...) -> None: ...

class SelfModelingSpec(_message.Message):
    __slots__ = ("layer", "weight")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    layer: int
    weight: float
    def __init__(self, layer: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class ActivationPenalty(_message.Message):
    __slots__ = ("site", "kind", "weight")
    SITE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    site: str
    kind: PenaltyKind
    weight: float
    def __init__(self, site: _Optional[str] = ..., kind: _Optional[_Union[PenaltyKind, str]] = ..., weight: _Optional[float] = ...) -> None: ...

class LabelSet(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, labels: _Optional[_Iterable[int]] = ...) -> None: ...

class RowRange(_message.Message):
    __slots__ = ("start", "stop")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class UnitRange(_message.Message):
    __slots__ = ("start", "stop", "weight")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    weight: float
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class RouteGroup(_message.Message):
    __slots__ = ("labels", "rows", "units", "values")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    labels: LabelSet
    rows: RowRange
    units: UnitRange
    values: MaskValues
    def __init__(self, labels: _Optional[_Union[LabelSet, _Mapping]] = ..., rows: _Optional[_Union[RowRange, _Mapping]] = ..., units: _Optional[_Union[UnitRange, _Mapping]] = ..., values: _Optional[_Union[MaskValues, _Mapping]] = ...) -> None: ...

class MaskValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class RoutingRule(_message.Message):
    __slots__ = ("site", "groups")
    SITE_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    site: str
    groups: _containers.RepeatedCompositeFieldContainer[RouteGroup]
    def __init__(self, site: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[RouteGroup, _Mapping]]] = ...) -> None: ...

class GradientRoutingSpec(_message.Message):
    __slots__ = ("rules",)
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[RoutingRule]
    def __init__(self, rules: _Optional[_Iterable[_Union[RoutingRule, _Mapping]]] = ...) -> None: ...

class CheckpointPolicy(_message.Message):
    __slots__ = ("count", "steps")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    count: int
    steps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, count: _Optional[int] = ..., steps: _Optional[_Iterable[int]] = ...) -> None: ...

class TrainSpec(_message.Message):
    __slots__ = ("model_name", "architecture", "loss", "dataset", "optimizer", "epochs", "batch_size", "seed", "self_modeling", "checkpoints", "penalties", "routing", "steps")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SELF_MODELING_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    PENALTIES_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    architecture: _models_pb2.Architecture
    loss: _models_pb2.LossKind
    dataset: DatasetSpec
    optimizer: OptimizerSpec
    epochs: int
    batch_size: int
    seed: int
    self_modeling: SelfModelingSpec
    checkpoints: CheckpointPolicy
    penalties: _containers.RepeatedCompositeFieldContainer[ActivationPenalty]
    routing: GradientRoutingSpec
    steps: int
    def __init__(self, model_name: _Optional[str] = ..., architecture: _Optional[_Union[_models_pb2.Architecture, _Mapping]] = ..., loss: _Optional[_Union[_models_pb2.LossKind, str]] = ..., dataset: _Optional[_Union[DatasetSpec, _Mapping]] = ..., optimizer: _Optional[_Union[OptimizerSpec, _Mapping]] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., self_modeling: _Optional[_Union[SelfModelingSpec, _Mapping]] = ..., checkpoints: _Optional[_Union[CheckpointPolicy, _Mapping]] = ..., penalties: _Optional[_Iterable[_Union[ActivationPenalty, _Mapping]]] = ..., routing: _Optional[_Union[GradientRoutingSpec, _Mapping]] = ..., steps: _Optional[int] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("request_id", "spec")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    spec: TrainSpec
    def __init__(self, request_id: _Optional[str] = ..., spec: _Optional[_Union[TrainSpec, _Mapping]] = ...) -> None: ...
