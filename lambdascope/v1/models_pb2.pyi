from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Activation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_UNSPECIFIED: _ClassVar[Activation]
    ACTIVATION_RELU: _ClassVar[Activation]
    ACTIVATION_TANH: _ClassVar[Activation]
    ACTIVATION_GELU: _ClassVar[Activation]
    ACTIVATION_IDENTITY: _ClassVar[Activation]

class ArtifactFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_FORMAT_UNSPECIFIED: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_SAFETENSORS: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_TORCH_EXPORT: _ClassVar[ArtifactFormat]

class LossKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_KIND_UNSPECIFIED: _ClassVar[LossKind]
    LOSS_KIND_MSE: _ClassVar[LossKind]
    LOSS_KIND_CROSS_ENTROPY: _ClassVar[LossKind]
ACTIVATION_UNSPECIFIED: Activation
ACTIVATION_RELU: Activation
ACTIVATION_TANH: Activation
ACTIVATION_GELU: Activation
ACTIVATION_IDENTITY: Activation
ARTIFACT_FORMAT_UNSPECIFIED: ArtifactFormat
ARTIFACT_FORMAT_SAFETENSORS: ArtifactFormat
ARTIFACT_FORMAT_TORCH_EXPORT: ArtifactFormat
LOSS_KIND_UNSPECIFIED: LossKind
LOSS_KIND_MSE: LossKind
LOSS_KIND_CROSS_ENTROPY: LossKind

class MLPArchitecture(_message.Message):
    __slots__ = ("widths", "activation", "no_bias")
    WIDTHS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    NO_BIAS_FIELD_NUMBER: _ClassVar[int]
    widths: _containers.RepeatedScalarFieldContainer[int]
    activation: Activation
    no_bias: bool
    def __init__(self, widths: _Optional[_Iterable[int]] = ..., activation: _Optional[_Union[Activation, str]] = ..., no_bias: _Optional[bool] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("mlp",)
    MLP_FIELD_NUMBER: _ClassVar[int]
    mlp: MLPArchitecture
    def __init__(self, mlp: _Optional[_Union[MLPArchitecture, _Mapping]] = ...) -> None: ...
