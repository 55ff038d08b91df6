"""Built-in architectures described without torch: validation, parameter layout, shapes, sites.

The registry checks an upload's tensors against the architecture it claims with this module,
so it must never import torch; `lambdascope.modules` builds the torch modules it describes.

An *activation site* is a named submodule whose forward output is an activation that other
code observes with forward hooks (self-modeling targets, probes): `sites` lists them with the
per-example shape of that output, and the module of `lambdascope.modules.build_module` has a
submodule of exactly each name.

Adding an architecture means adding a field to the `Architecture` oneof, one `_Kind` entry in
`_KINDS` here and one builder in `lambdascope.modules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lambdascope.v1 import models_pb2

# Refuse architectures above this many parameters (about 2 GB of float32).
MAX_PARAMETERS = 500_000_000
# Refuse absurdly deep stacks even when each layer is tiny.
MAX_LAYERS = 1_000
# ConvNetArchitecture.kernel_size 0 and QuadraticArchitecture.init_scale 0 mean these.
DEFAULT_KERNEL_SIZE = 3
DEFAULT_INIT_SCALE = 1.0
# TransformerArchitecture.heads 0 means this; mlp_width 0 means this many times width.
DEFAULT_HEADS = 1
DEFAULT_MLP_RATIO = 4
# Attention materialises context x context scores per head and example.
MAX_CONTEXT = 8_192

_ACTIVATION_NAMES = {
    models_pb2.ACTIVATION_UNSPECIFIED: "relu",
    models_pb2.ACTIVATION_RELU: "relu",
    models_pb2.ACTIVATION_TANH: "tanh",
    models_pb2.ACTIVATION_GELU: "gelu",
    models_pb2.ACTIVATION_IDENTITY: "identity",
}

Shape = tuple[int, ...]


def architecture_kind(arch: models_pb2.Architecture) -> str | None:
    """The name of the set oneof field ("mlp", "convnet", ...), or None when unset."""
    return arch.WhichOneof("kind")


def activation_name(activation: int) -> str:
    """The activation's short name ("relu", "tanh", "gelu", "identity") for the builders."""
    return _ACTIVATION_NAMES[activation]


def validate_architecture(arch: models_pb2.Architecture) -> None:
    """Raise ValueError (naming the offending field) unless `arch` can be built."""
    kind, spec = _kind_of(arch)
    kind.validate(spec)
    count = sum(math.prod(shape) for _, shape in kind.parameters(spec))
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"architecture.{kind.field} has {count:,} parameters, "
            f"more than the limit of {MAX_PARAMETERS:,}"
        )


def expected_parameters(arch: models_pb2.Architecture) -> dict[str, Shape]:
    """Parameter name -> shape of the module `build_module(arch)` would return (no torch)."""
    kind, spec = _valid_kind_of(arch)
    return dict(kind.parameters(spec))


def parameter_count(arch: models_pb2.Architecture) -> int:
    return sum(math.prod(shape) for shape in expected_parameters(arch).values())


def io_shapes(arch: models_pb2.Architecture) -> tuple[list[int], list[int]]:
    """(input shape, output shape) of the module, -1 marking the batch dimension."""
    kind, spec = _valid_kind_of(arch)
    inputs, outputs = kind.io(spec)
    return [-1, *inputs], [-1, *outputs]


def input_dtype(arch: models_pb2.Architecture) -> str:
    """The dtype the module takes as input: "float32", or "int64" for token ids."""
    kind, _ = _valid_kind_of(arch)
    return kind.input_dtype


def hidden_dims(arch: models_pb2.Architecture) -> list[int]:
    """Widths of the hidden layers self-modeling can target, layer k being element k-1."""
    kind, spec = _valid_kind_of(arch)
    return kind.hidden_dims(spec)


def sites(arch: models_pb2.Architecture) -> dict[str, Shape]:
    """Every activation site, in forward order -> the per-example shape of its output."""
    kind, spec = _valid_kind_of(arch)
    return dict(kind.sites(spec))


def hidden_site(arch: models_pb2.Architecture, layer: int) -> str:
    """The site of hidden layer `layer` (1-based), the one self-modeling predicts."""
    kind, spec = _valid_kind_of(arch)
    if kind.hidden_prefix is None:
        raise ValueError(
            "self_modeling needs an architecture with hidden layers (mlp, dln, convnet or "
            f"transformer), got architecture.{kind.field}"
        )
    count = len(kind.hidden_dims(spec))
    if count == 0:
        raise ValueError(
            f"self_modeling.layer: architecture.{kind.field} has no hidden layer to model"
        )
    if not 1 <= layer <= count:
        raise ValueError(
            f"self_modeling.layer must be in 1..{count} for this architecture, got {layer}"
        )
    return f"{kind.hidden_prefix}{layer}"


def widen_outputs(arch: models_pb2.Architecture, extra: int) -> models_pb2.Architecture:
    """A copy of `arch` with `extra` more outputs (e.g. self-model predictions)."""
    kind, spec = _valid_kind_of(arch)
    head = _head_of(kind)
    if extra < 0:
        raise ValueError(f"extra outputs must be at least 0, got {extra}")
    widened = _copy(arch)
    head.set(getattr(widened, kind.field), head.get(spec) + extra)
    validate_architecture(widened)
    return widened


def narrow_outputs(arch: models_pb2.Architecture, outputs: int) -> models_pb2.Architecture:
    """A copy of `arch` keeping its first `outputs` outputs: the inverse of `widen_outputs`."""
    kind, spec = _valid_kind_of(arch)
    head = _head_of(kind)
    current = head.get(spec)
    if not 1 <= outputs <= current:
        raise ValueError(
            f"outputs must be in 1..{current} for architecture.{kind.field}, got {outputs}"
        )
    narrowed = _copy(arch)
    head.set(getattr(narrowed, kind.field), outputs)
    return narrowed


def output_layer(arch: models_pb2.Architecture) -> str:
    """Parameter-name prefix of the final linear layer, whose rows are the outputs."""
    kind, spec = _valid_kind_of(arch)
    return _head_of(kind).layer(spec)


def reconstructs_input(arch: models_pb2.Architecture) -> bool:
    """Whether the module is trained with its input as the target (an autoencoder)."""
    kind, _ = _valid_kind_of(arch)
    return kind.reconstructs_input


# --------------------------------------------------------------------------------------
# Registry of kinds


@dataclass(frozen=True)
class _Head:
    """How to read and change the number of outputs of a kind with a final linear layer."""

    get: Callable[[Any], int]
    set: Callable[[Any, int], None]
    layer: Callable[[Any], str]


@dataclass(frozen=True)
class _Kind:
    field: str
    validate: Callable[[Any], None]
    parameters: Callable[[Any], list[tuple[str, Shape]]]
    io: Callable[[Any], tuple[list[int], list[int]]]
    sites: Callable[[Any], list[tuple[str, Shape]]]
    hidden_dims: Callable[[Any], list[int]]
    hidden_prefix: str | None = None  # site name of hidden layer k is f"{prefix}{k}"
    head: _Head | None = None
    reconstructs_input: bool = False
    input_dtype: str = "float32"  # "int64": token ids


def _kind_of(arch: models_pb2.Architecture) -> tuple[_Kind, Any]:
    if not isinstance(arch, models_pb2.Architecture):
        raise TypeError(f"expected a lambdascope.v1.Architecture, got {type(arch).__name__}")
    field = arch.WhichOneof("kind")
    if field is None:
        raise ValueError("architecture is not set")
    try:
        return _KINDS[field], getattr(arch, field)
    except KeyError:
        raise ValueError(f"architecture.{field} is not supported by this version") from None


def _valid_kind_of(arch: models_pb2.Architecture) -> tuple[_Kind, Any]:
    validate_architecture(arch)
    return _kind_of(arch)


def _head_of(kind: _Kind) -> _Head:
    if kind.head is None:
        raise ValueError(
            f"architecture.{kind.field} has no output layer to resize "
            "(only mlp, dln, convnet and transformer have one)"
        )
    return kind.head


def _copy(arch: models_pb2.Architecture) -> models_pb2.Architecture:
    copy = models_pb2.Architecture()
    copy.CopyFrom(arch)
    return copy


# --------------------------------------------------------------------------------------
# Shared checks and layouts


def _check_at_least_one(path: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{path} must be at least 1, got {value}")


def _check_each_at_least_one(path: str, values: Sequence[int]) -> None:
    for i, value in enumerate(values):
        _check_at_least_one(f"{path}[{i}]", value)


def _check_layers(path: str, layers: int) -> None:
    if layers > MAX_LAYERS:
        raise ValueError(f"{path} describes {layers} layers, more than the limit of {MAX_LAYERS}")


def _check_widths(path: str, widths: Sequence[int], ends: str) -> None:
    """At least two positive widths (`ends` names the first and last), not too many layers."""
    if len(widths) < 2:
        raise ValueError(f"{path} needs at least 2 entries ({ends}), got {list(widths)}")
    _check_layers(path, len(widths) - 1)
    _check_each_at_least_one(path, widths)


def _check_activation(path: str, activation: int) -> None:
    if activation not in _ACTIVATION_NAMES:
        raise ValueError(f"{path} has unknown value {activation}")


def _dense_parameters(prefix: str, widths: Sequence[int], bias: bool) -> list[tuple[str, Shape]]:
    """Parameters of an MLP module (`lambdascope.modules.MLP`) under `prefix`."""
    out: list[tuple[str, Shape]] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        out.append((f"{prefix}layers.{i}.weight", (fan_out, fan_in)))
        if bias:
            out.append((f"{prefix}layers.{i}.bias", (fan_out,)))
    return out


def _dense_sites(prefix: str, widths: Sequence[int]) -> list[tuple[str, Shape]]:
    """Hidden-layer sites of an MLP module under `prefix`: hidden.1 .. hidden.{L-1}."""
    return [(f"{prefix}hidden.{k}", (widths[k],)) for k in range(1, len(widths) - 1)]


def _set_last_width(widths: Any, outputs: int) -> None:
    widths[-1] = outputs


def _last_layer(widths: Sequence[int], prefix: str = "") -> str:
    return f"{prefix}layers.{len(widths) - 2}"


# --------------------------------------------------------------------------------------
# mlp


def _mlp_validate(mlp: models_pb2.MLPArchitecture) -> None:
    _check_widths("architecture.mlp.widths", mlp.widths, "inputs and outputs")
    _check_activation("architecture.mlp.activation", mlp.activation)


def _mlp_parameters(mlp: models_pb2.MLPArchitecture) -> list[tuple[str, Shape]]:
    return _dense_parameters("", mlp.widths, bias=not mlp.no_bias)


_WIDTHS_HEAD = _Head(
    get=lambda spec: spec.widths[-1],
    set=lambda spec, n: _set_last_width(spec.widths, n),
    layer=lambda spec: _last_layer(spec.widths),
)


# --------------------------------------------------------------------------------------
# dln


def _dln_validate(dln: models_pb2.DeepLinearArchitecture) -> None:
    _check_widths("architecture.dln.widths", dln.widths, "inputs and outputs")


def _dln_parameters(dln: models_pb2.DeepLinearArchitecture) -> list[tuple[str, Shape]]:
    return _dense_parameters("", dln.widths, bias=False)


# --------------------------------------------------------------------------------------
# convnet


def _convnet_validate(c: models_pb2.ConvNetArchitecture) -> None:
    path = "architecture.convnet"
    _check_at_least_one(f"{path}.in_channels", c.in_channels)
    _check_at_least_one(f"{path}.image_size", c.image_size)
    if not c.channels:
        raise ValueError(f"{path}.channels needs at least 1 entry (one per conv block), got []")
    _check_layers(path, len(c.channels) + len(c.hidden) + 1)
    _check_each_at_least_one(f"{path}.channels", c.channels)
    blocks = len(c.channels)
    if c.image_size < 2**blocks:
        raise ValueError(
            f"{path}.image_size must be at least 2**{blocks} for {blocks} conv blocks "
            f"(each 2x2 max-pool needs an input of at least 2), got {c.image_size}"
        )
    _check_kernel_size(c.kernel_size, c.image_size)
    _check_each_at_least_one(f"{path}.hidden", c.hidden)
    _check_at_least_one(f"{path}.outputs", c.outputs)
    _check_activation(f"{path}.activation", c.activation)


def _check_kernel_size(kernel_size: int, image_size: int) -> None:
    path = "architecture.convnet.kernel_size"
    if kernel_size < 0:
        raise ValueError(
            f"{path} must be positive (0 means {DEFAULT_KERNEL_SIZE}), got {kernel_size}"
        )
    if kernel_size % 2 == 0 and kernel_size != 0:
        raise ValueError(f"{path} must be odd, got {kernel_size}")
    if kernel_size > 2 * image_size + 1:
        raise ValueError(
            f"{path} must be at most 2 * image_size + 1 = {2 * image_size + 1}, got {kernel_size}"
        )


def _convnet_blocks(c: models_pb2.ConvNetArchitecture) -> list[Shape]:
    """(channels, height, width) after each block: same-padded conv, then a 2x2 max-pool."""
    side = c.image_size
    shapes = []
    for channels in c.channels:
        side //= 2
        shapes.append((channels, side, side))
    return shapes


def _convnet_head_widths(c: models_pb2.ConvNetArchitecture) -> list[int]:
    return [math.prod(_convnet_blocks(c)[-1]), *c.hidden, c.outputs]


def _convnet_parameters(c: models_pb2.ConvNetArchitecture) -> list[tuple[str, Shape]]:
    k = c.kernel_size or DEFAULT_KERNEL_SIZE
    out: list[tuple[str, Shape]] = []
    for i, (fan_in, fan_out) in enumerate(zip([c.in_channels, *c.channels], c.channels)):
        out.append((f"convs.{i}.weight", (fan_out, fan_in, k, k)))
        out.append((f"convs.{i}.bias", (fan_out,)))
    return out + _dense_parameters("head.", _convnet_head_widths(c), bias=True)


def _convnet_sites(c: models_pb2.ConvNetArchitecture) -> list[tuple[str, Shape]]:
    blocks = [(f"conv.{i}", shape) for i, shape in enumerate(_convnet_blocks(c), start=1)]
    return blocks + _dense_sites("head.", _convnet_head_widths(c))


def _convnet_set_outputs(c: models_pb2.ConvNetArchitecture, outputs: int) -> None:
    c.outputs = outputs


# --------------------------------------------------------------------------------------
# autoencoder


def _autoencoder_validate(a: models_pb2.AutoencoderArchitecture) -> None:
    path = "architecture.autoencoder"
    _check_widths(f"{path}.encoder_widths", a.encoder_widths, "inputs and latent code")
    _check_layers(path, 2 * (len(a.encoder_widths) - 1))
    _check_activation(f"{path}.activation", a.activation)


def _autoencoder_parameters(a: models_pb2.AutoencoderArchitecture) -> list[tuple[str, Shape]]:
    widths = list(a.encoder_widths)
    return (_dense_parameters("encoder.", widths, bias=True)
            + _dense_parameters("decoder.", widths[::-1], bias=True))


def _autoencoder_sites(a: models_pb2.AutoencoderArchitecture) -> list[tuple[str, Shape]]:
    widths = list(a.encoder_widths)
    return (_dense_sites("encoder.", widths)
            + [("latent", (widths[-1],))]
            + _dense_sites("decoder.", widths[::-1]))


# --------------------------------------------------------------------------------------
# quadratic


def _quadratic_validate(q: models_pb2.QuadraticArchitecture) -> None:
    _check_at_least_one("architecture.quadratic.dim", q.dim)
    if not math.isfinite(q.init_scale):
        raise ValueError(f"architecture.quadratic.init_scale must be finite, got {q.init_scale}")


# --------------------------------------------------------------------------------------
# transformer


def _transformer_validate(t: models_pb2.TransformerArchitecture) -> None:
    path = "architecture.transformer"
    for name in ("vocab_size", "context", "width", "layers", "outputs"):
        _check_at_least_one(f"{path}.{name}", getattr(t, name))
    _check_layers(f"{path}.layers", t.layers)
    if t.context > MAX_CONTEXT:
        raise ValueError(f"{path}.context must be at most {MAX_CONTEXT:,} (attention scores grow "
                         f"as context**2), got {t.context:,}")
    if t.heads < 0:
        raise ValueError(f"{path}.heads must be positive (0 means {DEFAULT_HEADS}), got {t.heads}")
    if t.mlp_width < 0:
        raise ValueError(f"{path}.mlp_width must be positive (0 means {DEFAULT_MLP_RATIO} * "
                         f"width), got {t.mlp_width}")
    heads = t.heads or DEFAULT_HEADS
    if t.width % heads:
        raise ValueError(f"{path}.width ({t.width}) must be a multiple of heads ({heads}): "
                         "each head attends over width / heads dimensions")


def _transformer_mlp_width(t: models_pb2.TransformerArchitecture) -> int:
    return t.mlp_width or DEFAULT_MLP_RATIO * t.width


def _transformer_parameters(t: models_pb2.TransformerArchitecture) -> list[tuple[str, Shape]]:
    """In the module's state_dict order (`lambdascope.modules.Transformer`)."""
    d = t.width
    out: list[tuple[str, Shape]] = [("embed.weight", (t.vocab_size, d)),
                                    ("position.weight", (t.context, d))]
    for i in range(t.layers):
        block = f"blocks.{i}."
        out += [(f"{block}attention_norm.weight", (d,)), (f"{block}attention_norm.bias", (d,)),
                (f"{block}attention.qkv.weight", (3 * d, d)),
                (f"{block}attention.qkv.bias", (3 * d,)),
                (f"{block}attention.out.weight", (d, d)), (f"{block}attention.out.bias", (d,)),
                (f"{block}mlp_norm.weight", (d,)), (f"{block}mlp_norm.bias", (d,))]
        out += _dense_parameters(f"{block}mlp.", [d, _transformer_mlp_width(t), d], bias=True)
    return out + [("norm.weight", (d,)), ("norm.bias", (d,)),
                  ("head.weight", (t.outputs, d)), ("head.bias", (t.outputs,))]


def _transformer_set_outputs(t: models_pb2.TransformerArchitecture, outputs: int) -> None:
    t.outputs = outputs


def _dense_kind(name: str, validate, parameters) -> _Kind:
    """A stack of dense layers described by ``widths`` (the MLP, the deep linear network)."""
    return _Kind(name, validate, parameters,
                 io=lambda m: ([m.widths[0]], [m.widths[-1]]),
                 sites=lambda m: _dense_sites("", m.widths),
                 hidden_dims=lambda m: list(m.widths[1:-1]),
                 hidden_prefix="hidden.",
                 head=_WIDTHS_HEAD)


_KINDS: dict[str, _Kind] = {
    "mlp": _dense_kind("mlp", _mlp_validate, _mlp_parameters),
    "dln": _dense_kind("dln", _dln_validate, _dln_parameters),
    "convnet": _Kind(
        "convnet", _convnet_validate, _convnet_parameters,
        io=lambda c: ([c.in_channels * c.image_size**2], [c.outputs]),
        sites=_convnet_sites,
        hidden_dims=lambda c: list(c.hidden),
        hidden_prefix="head.hidden.",
        head=_Head(
            get=lambda c: c.outputs,
            set=_convnet_set_outputs,
            layer=lambda c: _last_layer(_convnet_head_widths(c), "head."),
        ),
    ),
    "autoencoder": _Kind(
        "autoencoder", _autoencoder_validate, _autoencoder_parameters,
        io=lambda a: ([a.encoder_widths[0]], [a.encoder_widths[0]]),
        sites=_autoencoder_sites,
        hidden_dims=lambda a: [],
        reconstructs_input=True,
    ),
    "quadratic": _Kind(
        "quadratic", _quadratic_validate,
        parameters=lambda q: [("v", (q.dim,))],
        io=lambda q: ([q.dim], [1]),
        sites=lambda q: [],
        hidden_dims=lambda q: [],
    ),
    "transformer": _Kind(
        "transformer", _transformer_validate, _transformer_parameters,
        io=lambda t: ([t.context], [t.outputs]),
        # One site: the representation the head reads, so self-modeling, penalties and routing
        # see [batch, width] units as they do in an MLP's last hidden layer.
        sites=lambda t: [("hidden.1", (t.width,))],
        hidden_dims=lambda t: [t.width],
        hidden_prefix="hidden.",
        head=_Head(get=lambda t: t.outputs, set=_transformer_set_outputs,
                   layer=lambda t: "head"),
        input_dtype="int64",
    ),
}
