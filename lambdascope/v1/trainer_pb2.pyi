from lambdascope.v1 import jobs_pb2 as _jobs_pb2
from lambdascope.v1 import models_pb2 as _models_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetSpec(_message.Message):
    __slots__ = ("builtin", "dataset_id", "test_fraction")
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    builtin: str
    dataset_id: str
    test_fraction: float
    def __init__(self, builtin: _Optional[str] = ..., dataset_id: _Optional[str] = ..., test_fraction: _Optional[float] = ...) -> None: ...

class OptimizerSpec(_message.Message):
    __slots__ = ("kind", "learning_rate", "momentum", "nesterov", "weight_decay")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    kind: str
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float
    def __init__(self, kind: _Optional[str] = ..., learning_rate: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class SelfModelingSpec(_message.Message):
    __slots__ = ("layer", "weight")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    layer: int
    weight: float
    def __init__(self, layer: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class CheckpointPolicy(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class TrainSpec(_message.Message):
    __slots__ = ("model_name", "architecture", "loss", "dataset", "optimizer", "epochs", "batch_size", "seed", "self_modeling", "checkpoints")
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
    def __init__(self, model_name: _Optional[str] = ..., architecture: _Optional[_Union[_models_pb2.Architecture, _Mapping]] = ..., loss: _Optional[_Union[_models_pb2.LossKind, str]] = ..., dataset: _Optional[_Union[DatasetSpec, _Mapping]] = ..., optimizer: _Optional[_Union[OptimizerSpec, _Mapping]] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., self_modeling: _Optional[_Union[SelfModelingSpec, _Mapping]] = ..., checkpoints: _Optional[_Union[CheckpointPolicy, _Mapping]] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("request_id", "spec")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    spec: TrainSpec
    def __init__(self, request_id: _Optional[str] = ..., spec: _Optional[_Union[TrainSpec, _Mapping]] = ...) -> None: ...
