import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lambdascope.v1 import models_pb2 as _models_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_FIXED: _ClassVar[StopReason]
    STOP_REASON_CONVERGED: _ClassVar[StopReason]
    STOP_REASON_STEP_CAP: _ClassVar[StopReason]
    STOP_REASON_TIME_CAP: _ClassVar[StopReason]
    STOP_REASON_NOT_A_MINIMUM: _ClassVar[StopReason]

class VerdictState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_STATE_UNSPECIFIED: _ClassVar[VerdictState]
    VERDICT_STATE_OK: _ClassVar[VerdictState]
    VERDICT_STATE_WARNING: _ClassVar[VerdictState]
    VERDICT_STATE_FAILED: _ClassVar[VerdictState]
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_FIXED: StopReason
STOP_REASON_CONVERGED: StopReason
STOP_REASON_STEP_CAP: StopReason
STOP_REASON_TIME_CAP: StopReason
STOP_REASON_NOT_A_MINIMUM: StopReason
VERDICT_STATE_UNSPECIFIED: VerdictState
VERDICT_STATE_OK: VerdictState
VERDICT_STATE_WARNING: VerdictState
VERDICT_STATE_FAILED: VerdictState

class SamplerConfig(_message.Message):
    __slots__ = ("chains", "draws", "burnin", "thin", "step_size", "localization", "nbeta", "batch_size", "seed", "weight_decay", "until_ess", "max_rhat", "max_mcse", "max_drift", "max_steps", "max_seconds", "bias_correction", "chains_per_pass", "compile_gradients", "precondition", "remove_slope")
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    BURNIN_FIELD_NUMBER: _ClassVar[int]
    THIN_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOCALIZATION_FIELD_NUMBER: _ClassVar[int]
    NBETA_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    UNTIL_ESS_FIELD_NUMBER: _ClassVar[int]
    MAX_RHAT_FIELD_NUMBER: _ClassVar[int]
    MAX_MCSE_FIELD_NUMBER: _ClassVar[int]
    MAX_DRIFT_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BIAS_CORRECTION_FIELD_NUMBER: _ClassVar[int]
    CHAINS_PER_PASS_FIELD_NUMBER: _ClassVar[int]
    COMPILE_GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    PRECONDITION_FIELD_NUMBER: _ClassVar[int]
    REMOVE_SLOPE_FIELD_NUMBER: _ClassVar[int]
    chains: int
    draws: int
    burnin: int
    thin: int
    step_size: float
    localization: float
    nbeta: float
    batch_size: int
    seed: int
    weight_decay: float
    until_ess: float
    max_rhat: float
    max_mcse: float
    max_drift: float
    max_steps: int
    max_seconds: float
    bias_correction: bool
    chains_per_pass: int
    compile_gradients: bool
    precondition: str
    remove_slope: bool
    def __init__(self, chains: _Optional[int] = ..., draws: _Optional[int] = ..., burnin: _Optional[int] = ..., thin: _Optional[int] = ..., step_size: _Optional[float] = ..., localization: _Optional[float] = ..., nbeta: _Optional[float] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., weight_decay: _Optional[float] = ..., until_ess: _Optional[float] = ..., max_rhat: _Optional[float] = ..., max_mcse: _Optional[float] = ..., max_drift: _Optional[float] = ..., max_steps: _Optional[int] = ..., max_seconds: _Optional[float] = ..., bias_correction: _Optional[bool] = ..., chains_per_pass: _Optional[int] = ..., compile_gradients: _Optional[bool] = ..., precondition: _Optional[str] = ..., remove_slope: _Optional[bool] = ...) -> None: ...

class ParameterGroup(_message.Message):
    __slots__ = ("name", "patterns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    patterns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., patterns: _Optional[_Iterable[str]] = ...) -> None: ...

class Measures(_message.Message):
    __slots__ = ("per_layer_llc", "groups", "hessian", "weight_statistics")
    PER_LAYER_LLC_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    per_layer_llc: bool
    groups: _containers.RepeatedCompositeFieldContainer[ParameterGroup]
    hessian: bool
    weight_statistics: bool
    def __init__(self, per_layer_llc: _Optional[bool] = ..., groups: _Optional[_Iterable[_Union[ParameterGroup, _Mapping]]] = ..., hessian: _Optional[bool] = ..., weight_statistics: _Optional[bool] = ...) -> None: ...

class AuditConfig(_message.Message):
    __slots__ = ("loss", "sampler", "device", "measures", "dtype", "model_targets")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEASURES_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_TARGETS_FIELD_NUMBER: _ClassVar[int]
    loss: _models_pb2.LossKind
    sampler: SamplerConfig
    device: str
    measures: Measures
    dtype: str
    model_targets: bool
    def __init__(self, loss: _Optional[_Union[_models_pb2.LossKind, str]] = ..., sampler: _Optional[_Union[SamplerConfig, _Mapping]] = ..., device: _Optional[str] = ..., measures: _Optional[_Union[Measures, _Mapping]] = ..., dtype: _Optional[str] = ..., model_targets: _Optional[bool] = ...) -> None: ...

class LLCEstimate(_message.Message):
    __slots__ = ("mean", "std", "per_chain", "uncorrected_mean", "bias_corrected", "standard_error", "slope_removed")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    PER_CHAIN_FIELD_NUMBER: _ClassVar[int]
    UNCORRECTED_MEAN_FIELD_NUMBER: _ClassVar[int]
    BIAS_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    STANDARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    SLOPE_REMOVED_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    per_chain: _containers.RepeatedScalarFieldContainer[float]
    uncorrected_mean: float
    bias_corrected: bool
    standard_error: float
    slope_removed: bool
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ..., per_chain: _Optional[_Iterable[float]] = ..., uncorrected_mean: _Optional[float] = ..., bias_corrected: _Optional[bool] = ..., standard_error: _Optional[float] = ..., slope_removed: _Optional[bool] = ...) -> None: ...

class ChainTrace(_message.Message):
    __slots__ = ("loss",)
    LOSS_FIELD_NUMBER: _ClassVar[int]
    loss: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, loss: _Optional[_Iterable[float]] = ...) -> None: ...

class CalibrationCandidate(_message.Message):
    __slots__ = ("step_size", "acceptance", "llc", "stable", "note")
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    LLC_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    step_size: float
    acceptance: float
    llc: float
    stable: bool
    note: str
    def __init__(self, step_size: _Optional[float] = ..., acceptance: _Optional[float] = ..., llc: _Optional[float] = ..., stable: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class Calibration(_message.Message):
    __slots__ = ("ran", "chosen_step_size", "candidates", "summary", "seconds", "top_eigenvalue")
    RAN_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOP_EIGENVALUE_FIELD_NUMBER: _ClassVar[int]
    ran: bool
    chosen_step_size: float
    candidates: _containers.RepeatedCompositeFieldContainer[CalibrationCandidate]
    summary: str
    seconds: float
    top_eigenvalue: float
    def __init__(self, ran: _Optional[bool] = ..., chosen_step_size: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[CalibrationCandidate, _Mapping]]] = ..., summary: _Optional[str] = ..., seconds: _Optional[float] = ..., top_eigenvalue: _Optional[float] = ...) -> None: ...

class Diagnostics(_message.Message):
    __slots__ = ("rhat", "ess", "acceptance", "below_init_fraction", "diverged_chains", "mcse_relative", "below_init_segments", "drift", "predicted_bias", "drift_error", "gradient_norm", "slope_term")
    RHAT_FIELD_NUMBER: _ClassVar[int]
    ESS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    BELOW_INIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_CHAINS_FIELD_NUMBER: _ClassVar[int]
    MCSE_RELATIVE_FIELD_NUMBER: _ClassVar[int]
    BELOW_INIT_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_BIAS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_ERROR_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NORM_FIELD_NUMBER: _ClassVar[int]
    SLOPE_TERM_FIELD_NUMBER: _ClassVar[int]
    rhat: float
    ess: float
    acceptance: float
    below_init_fraction: float
    diverged_chains: _containers.RepeatedScalarFieldContainer[int]
    mcse_relative: float
    below_init_segments: float
    drift: float
    predicted_bias: float
    drift_error: float
    gradient_norm: float
    slope_term: float
    def __init__(self, rhat: _Optional[float] = ..., ess: _Optional[float] = ..., acceptance: _Optional[float] = ..., below_init_fraction: _Optional[float] = ..., diverged_chains: _Optional[_Iterable[int]] = ..., mcse_relative: _Optional[float] = ..., below_init_segments: _Optional[float] = ..., drift: _Optional[float] = ..., predicted_bias: _Optional[float] = ..., drift_error: _Optional[float] = ..., gradient_norm: _Optional[float] = ..., slope_term: _Optional[float] = ...) -> None: ...

class Stopping(_message.Message):
    __slots__ = ("reason", "summary", "steps", "warmup_steps", "burnin", "draws", "checks")
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    BURNIN_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    reason: StopReason
    summary: str
    steps: int
    warmup_steps: int
    burnin: int
    draws: int
    checks: int
    def __init__(self, reason: _Optional[_Union[StopReason, str]] = ..., summary: _Optional[str] = ..., steps: _Optional[int] = ..., warmup_steps: _Optional[int] = ..., burnin: _Optional[int] = ..., draws: _Optional[int] = ..., checks: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("state", "reasons", "not_at_minimum")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    NOT_AT_MINIMUM_FIELD_NUMBER: _ClassVar[int]
    state: VerdictState
    reasons: _containers.RepeatedScalarFieldContainer[str]
    not_at_minimum: bool
    def __init__(self, state: _Optional[_Union[VerdictState, str]] = ..., reasons: _Optional[_Iterable[str]] = ..., not_at_minimum: _Optional[bool] = ...) -> None: ...

class GroupLLC(_message.Message):
    __slots__ = ("name", "num_parameters", "llc", "parameter_names")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LLC_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_NAMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_parameters: int
    llc: LLCEstimate
    parameter_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., num_parameters: _Optional[int] = ..., llc: _Optional[_Union[LLCEstimate, _Mapping]] = ..., parameter_names: _Optional[_Iterable[str]] = ...) -> None: ...

class HessianSummary(_message.Message):
    __slots__ = ("trace", "trace_stderr", "top_eigenvalue", "probes", "power_iterations")
    TRACE_FIELD_NUMBER: _ClassVar[int]
    TRACE_STDERR_FIELD_NUMBER: _ClassVar[int]
    TOP_EIGENVALUE_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    POWER_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    trace: float
    trace_stderr: float
    top_eigenvalue: float
    probes: int
    power_iterations: int
    def __init__(self, trace: _Optional[float] = ..., trace_stderr: _Optional[float] = ..., top_eigenvalue: _Optional[float] = ..., probes: _Optional[int] = ..., power_iterations: _Optional[int] = ...) -> None: ...

class WeightStatistics(_message.Message):
    __slots__ = ("name", "numel", "mean", "std", "kurtosis")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMEL_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    KURTOSIS_FIELD_NUMBER: _ClassVar[int]
    name: str
    numel: int
    mean: float
    std: float
    kurtosis: float
    def __init__(self, name: _Optional[str] = ..., numel: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., kurtosis: _Optional[float] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("seconds", "load_seconds", "sampling_seconds", "calibration_seconds", "chain_steps_per_second")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    load_seconds: float
    sampling_seconds: float
    calibration_seconds: float
    chain_steps_per_second: float
    def __init__(self, seconds: _Optional[float] = ..., load_seconds: _Optional[float] = ..., sampling_seconds: _Optional[float] = ..., calibration_seconds: _Optional[float] = ..., chain_steps_per_second: _Optional[float] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("chains_per_pass", "chains_summary", "bytes_per_chain", "memory_budget_bytes", "peak_memory_bytes", "peak_memory_kind", "compile_summary", "compile_seconds")
    CHAINS_PER_PASS_FIELD_NUMBER: _ClassVar[int]
    CHAINS_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_CHAIN_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_KIND_FIELD_NUMBER: _ClassVar[int]
    COMPILE_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    COMPILE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    chains_per_pass: int
    chains_summary: str
    bytes_per_chain: int
    memory_budget_bytes: int
    peak_memory_bytes: int
    peak_memory_kind: str
    compile_summary: str
    compile_seconds: float
    def __init__(self, chains_per_pass: _Optional[int] = ..., chains_summary: _Optional[str] = ..., bytes_per_chain: _Optional[int] = ..., memory_budget_bytes: _Optional[int] = ..., peak_memory_bytes: _Optional[int] = ..., peak_memory_kind: _Optional[str] = ..., compile_summary: _Optional[str] = ..., compile_seconds: _Optional[float] = ...) -> None: ...

class AuditReport(_message.Message):
    __slots__ = ("id", "model_version_id", "dataset_id", "job_id", "config", "llc", "init_loss", "num_examples", "num_parameters", "traces", "timing", "device", "created_at", "calibration", "diagnostics", "verdict", "wbic", "group_llc", "hessian", "weight_statistics", "step", "trace_stride", "stopping", "loss_description", "resources")
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
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    WBIC_FIELD_NUMBER: _ClassVar[int]
    GROUP_LLC_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TRACE_STRIDE_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    LOSS_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
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
    calibration: Calibration
    diagnostics: Diagnostics
    verdict: Verdict
    wbic: float
    group_llc: _containers.RepeatedCompositeFieldContainer[GroupLLC]
    hessian: HessianSummary
    weight_statistics: _containers.RepeatedCompositeFieldContainer[WeightStatistics]
    step: int
    trace_stride: int
    stopping: Stopping
    loss_description: str
    resources: Resources
    def __init__(self, id: _Optional[str] = ..., model_version_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., job_id: _Optional[str] = ..., config: _Optional[_Union[AuditConfig, _Mapping]] = ..., llc: _Optional[_Union[LLCEstimate, _Mapping]] = ..., init_loss: _Optional[float] = ..., num_examples: _Optional[int] = ..., num_parameters: _Optional[int] = ..., traces: _Optional[_Iterable[_Union[ChainTrace, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., device: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., calibration: _Optional[_Union[Calibration, _Mapping]] = ..., diagnostics: _Optional[_Union[Diagnostics, _Mapping]] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., wbic: _Optional[float] = ..., group_llc: _Optional[_Iterable[_Union[GroupLLC, _Mapping]]] = ..., hessian: _Optional[_Union[HessianSummary, _Mapping]] = ..., weight_statistics: _Optional[_Iterable[_Union[WeightStatistics, _Mapping]]] = ..., step: _Optional[int] = ..., trace_stride: _Optional[int] = ..., stopping: _Optional[_Union[Stopping, _Mapping]] = ..., loss_description: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ...) -> None: ...
