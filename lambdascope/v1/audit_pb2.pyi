import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lambdascope.v1 import models_pb2 as _models_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplerConfig(_message.Message):
    __slots__ = ("chains", "draws", "burnin", "thin", "step_size", "localization", "nbeta", "batch_size", "seed")
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    BURNIN_FIELD_NUMBER: _ClassVar[int]
    THIN_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOCALIZATION_FIELD_NUMBER: _ClassVar[int]
    NBETA_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    chains: int
    draws: int
    burnin: int
    thin: int
    step_size: float
    localization: float
    nbeta: float
    batch_size: int
    seed: int
    def __init__(self, chains: _Optional[int] = ..., draws: _Optional[int] = ..., burnin: _Optional[int] = ..., thin: _Optional[int] = ..., step_size: _Optional[float] = ..., localization: _Optional[float] = ..., nbeta: _Optional[float] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class AuditConfig(_message.Message):
    __slots__ = ("loss", "sampler", "device")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    loss: _models_pb2.LossKind
    sampler: SamplerConfig
    device: str
    def __init__(self, loss: _Optional[_Union[_models_pb2.LossKind, str]] = ..., sampler: _Optional[_Union[SamplerConfig, _Mapping]] = ..., device: _Optional[str] = ...) -> None: ...

class LLCEstimate(_message.Message):
    __slots__ = ("mean", "std", "per_chain")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    PER_CHAIN_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    per_chain: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ..., per_chain: _Optional[_Iterable[float]] = ...) -> None: ...

class ChainTrace(_message.Message):
    __slots__ = ("loss",)
    LOSS_FIELD_NUMBER: _ClassVar[int]
    loss: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, loss: _Optional[_Iterable[float]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("seconds", "load_seconds", "sampling_seconds")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    load_seconds: float
    sampling_seconds: float
    def __init__(self, seconds: _Optional[float] = ..., load_seconds: _Optional[float] = ..., sampling_seconds: _Optional[float] = ...) -> None: ...

class AuditReport(_message.Message):
    __slots__ = ("id", "model_version_id", "dataset_id", "job_id", "config", "llc", "init_loss", "num_examples", "num_parameters", "traces", "timing", "device", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LLC_FIELD_NUMBER: _ClassVar[int]
    INIT_LOSS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRACES_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_version_id: str
    dataset_id: str
    job_id: str
    config: AuditConfig
    llc: LLCEstimate
    init_loss: float
    num_examples: int
    num_parameters: int
    traces: _containers.RepeatedCompositeFieldContainer[ChainTrace]
    timing: Timing
    device: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., model_version_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., job_id: _Optional[str] = ..., config: _Optional[_Union[AuditConfig, _Mapping]] = ..., llc: _Optional[_Union[LLCEstimate, _Mapping]] = ..., init_loss: _Optional[float] = ..., num_examples: _Optional[int] = ..., num_parameters: _Optional[int] = ..., traces: _Optional[_Iterable[_Union[ChainTrace, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., device: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
