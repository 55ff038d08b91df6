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
    LOSS_KIND_MAE: _ClassVar[LossKind]
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
LOSS_KIND_MAE: LossKind

class MLPArchitecture(_message.Message):
    __slots__ = ("widths", "activation", "no_bias")
    WIDTHS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    NO_BIAS_FIELD_NUMBER: _ClassVar[int]
    widths: _containers.RepeatedScalarFieldContainer[int]
    activation: Activation
    no_bias: bool
    def __init__(self, widths: _Optional[_Iterable[int]] = ..., activation: _Optional[_Union[Activation, str]] = ..., no_bias: _Optional[bool] = ...) -> None: ...

class DeepLinearArchitecture(_message.Message):
    __slots__ = ("widths",)
    WIDTHS_FIELD_NUMBER: _ClassVar[int]
    widths: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, widths: _Optional[_Iterable[int]] = ...) -> None: ...

class ConvNetArchitecture(_message.Message):
    __slots__ = ("in_channels", "image_size", "channels", "kernel_size", "hidden", "outputs", "activation")
    IN_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    in_channels: int
    image_size: int
    channels: _containers.RepeatedScalarFieldContainer[int]
    kernel_size: int
    hidden: _containers.RepeatedScalarFieldContainer[int]
    outputs: int
    activation: Activation
    def __init__(self, in_channels: _Optional[int] = ..., image_size: _Optional[int] = ..., channels: _Optional[_Iterable[int]] = ..., kernel_size: _Optional[int] = ..., hidden: _Optional[_Iterable[int]] = ..., outputs: _Optional[int] = ..., activation: _Optional[_Union[Activation, str]] = ...) -> None: ...

class AutoencoderArchitecture(_message.Message):
    __slots__ = ("encoder_widths", "activation")
    ENCODER_WIDTHS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    encoder_widths: _containers.RepeatedScalarFieldContainer[int]
    activation: Activation
    def __init__(self, encoder_widths: _Optional[_Iterable[int]] = ..., activation: _Optional[_Union[Activation, str]] = ...) -> None: ...

class QuadraticArchitecture(_message.Message):
    __slots__ = ("dim", "init_scale")
    DIM_FIELD_NUMBER: _ClassVar[int]
    INIT_SCALE_FIELD_NUMBER: _ClassVar[int]
    dim: int
    init_scale: float
    def __init__(self, dim: _Optional[int] = ..., init_scale: _Optional[float] = ...) -> None: ...

class TransformerArchitecture(_message.Message):
    __slots__ = ("vocab_size", "context", "width", "heads", "layers", "mlp_width", "outputs")
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MLP_WIDTH_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    vocab_size: int
    context: int
    width: int
    heads: int
    layers: int
    mlp_width: int
    outputs: int
    def __init__(self, vocab_size: _Optional[int] = ..., context: _Optional[int] = ..., width: _Optional[int] = ..., heads: _Optional[int] = ..., layers: _Optional[int] = ..., mlp_width: _Optional[int] = ..., outputs: _Optional[int] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("mlp", "dln", "convnet", "autoencoder", "quadratic", "transformer")
    MLP_FIELD_NUMBER: _ClassVar[int]
    DLN_FIELD_NUMBER: _ClassVar[int]
    CONVNET_FIELD_NUMBER: _ClassVar[int]
    AUTOENCODER_FIELD_NUMBER: _ClassVar[int]
    QUADRATIC_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMER_FIELD_NUMBER: _ClassVar[int]
    mlp: MLPArchitecture
    dln: DeepLinearArchitecture
    convnet: ConvNetArchitecture
    autoencoder: AutoencoderArchitecture
    quadratic: QuadraticArchitecture
    transformer: TransformerArchitecture
    def __init__(self, mlp: _Optional[_Union[MLPArchitecture, _Mapping]] = ..., dln: _Optional[_Union[DeepLinearArchitecture, _Mapping]] = ..., convnet: _Optional[_Union[ConvNetArchitecture, _Mapping]] = ..., autoencoder: _Optional[_Union[AutoencoderArchitecture, _Mapping]] = ..., quadratic: _Optional[_Union[QuadraticArchitecture, _Mapping]] = ..., transformer: _Optional[_Union[TransformerArchitecture, _Mapping]] = ...) -> None: ...
