"""Built-in architectures: rebuild a module from a `lambdascope.v1.Architecture` message.

Shared by the trainer (builds and trains), the estimator (rebuilds a checkpoint to audit it)
and the registry (checks an upload's tensors against the architecture it claims, without
torch: see `expected_parameters`).

Adding an architecture means adding a field to the `Architecture` oneof and one `_Kind`
entry in `_KINDS` (validate, parameter layout, hidden widths, build, input/output
shapes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lambdascope.v1 import models_pb2

if TYPE_CHECKING:  # torch is only needed to build or load; the registry validates without it
    import torch

# Refuse architectures above this many parameters (about 2 GB of float32).
MAX_PARAMETERS = 500_000_000
# Refuse absurdly deep stacks even when each layer is tiny.
MAX_LAYERS = 1_000

_ACTIVATION_NAMES = {
    models_pb2.ACTIVATION_UNSPECIFIED: "relu",
    models_pb2.ACTIVATION_RELU: "relu",
    models_pb2.ACTIVATION_TANH: "tanh",
    models_pb2.ACTIVATION_GELU: "gelu",
    models_pb2.ACTIVATION_IDENTITY: "identity",
}


def architecture_kind(arch: models_pb2.Architecture) -> str | None:
    """The name of the set oneof field ("mlp", ...), or None when unset."""
    return arch.WhichOneof("kind")


def validate_architecture(arch: models_pb2.Architecture) -> None:
    """Raise ValueError (naming the offending field) unless `arch` can be built."""
    kind = _kind_of(arch)
    kind.validate(getattr(arch, kind.field))
    count = sum(math.prod(shape) for _, shape in kind.parameters(getattr(arch, kind.field)))
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"architecture.{kind.field} has {count:,} parameters, "
            f"more than the limit of {MAX_PARAMETERS:,}"
        )


def expected_parameters(arch: models_pb2.Architecture) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the module `build_module(arch)` would return (no torch)."""
    validate_architecture(arch)
    kind = _kind_of(arch)
    return dict(kind.parameters(getattr(arch, kind.field)))


def parameter_count(arch: models_pb2.Architecture) -> int:
    return sum(math.prod(shape) for shape in expected_parameters(arch).values())


def io_shapes(arch: models_pb2.Architecture) -> tuple[list[int], list[int]]:
    """(input shape, output shape) of the module, -1 marking the batch dimension."""
    validate_architecture(arch)
    kind = _kind_of(arch)
    inputs, outputs = kind.io(getattr(arch, kind.field))
    return [-1, *inputs], [-1, *outputs]


def hidden_dims(arch: models_pb2.Architecture) -> list[int]:
    """Width of each hidden layer, index 1..L-1 in order (hidden layer k is element k-1)."""
    validate_architecture(arch)
    kind = _kind_of(arch)
    return kind.hidden_dims(getattr(arch, kind.field))


def build_module(arch: models_pb2.Architecture, *, seed: int | None = None) -> torch.nn.Module:
    """Build a freshly initialised module. With `seed`, the initialisation is reproducible
    and the global torch RNG is left untouched."""
    import torch

    validate_architecture(arch)
    kind = _kind_of(arch)
    spec = getattr(arch, kind.field)
    if seed is None:
        return kind.build(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return kind.build(spec)


def load_weights(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Load `tensors` into `module`, requiring exactly the module's names and shapes.

    Raises ValueError listing every missing, unexpected, wrong-shaped or non-floating
    tensor; the module is left unchanged when anything is wrong."""
    import torch

    state = module.state_dict()
    missing = sorted(set(state) - set(tensors))
    unexpected = sorted(set(tensors) - set(state))
    wrong_shape = []
    wrong_dtype = []
    for name in sorted(set(state) & set(tensors)):
        given = tensors[name]
        if tuple(given.shape) != tuple(state[name].shape):
            wrong_shape.append(
                f"{name}: expected {list(state[name].shape)}, got {list(given.shape)}"
            )
        elif state[name].is_floating_point() and not given.is_floating_point():
            wrong_dtype.append(f"{name}: expected a floating-point tensor, got {given.dtype}")
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {'; '.join(wrong_shape)}")
    if wrong_dtype:
        problems.append(f"wrong dtypes: {'; '.join(wrong_dtype)}")
    if problems:
        raise ValueError("weights do not match the architecture: " + " | ".join(problems))
    with torch.no_grad():
        for name, target in state.items():
            # state_dict() tensors share storage with the parameters and buffers.
            target.copy_(tensors[name])


# --------------------------------------------------------------------------------------
# Registry of kinds


@dataclass(frozen=True)
class _Kind:
    field: str
    validate: Callable[[Any], None]
    parameters: Callable[[Any], list[tuple[str, tuple[int, ...]]]]
    hidden_dims: Callable[[Any], list[int]]
    build: Callable[[Any], Any]
    io: Callable[[Any], tuple[list[int], list[int]]]


def _kind_of(arch: models_pb2.Architecture) -> _Kind:
    if not isinstance(arch, models_pb2.Architecture):
        raise TypeError(f"expected a lambdascope.v1.Architecture, got {type(arch).__name__}")
    field = arch.WhichOneof("kind")
    if field is None:
        raise ValueError("architecture is not set")
    try:
        return _KINDS[field]
    except KeyError:
        raise ValueError(f"architecture.{field} is not supported by this version") from None


# --------------------------------------------------------------------------------------
# mlp


def _mlp_validate(mlp: models_pb2.MLPArchitecture) -> None:
    widths = list(mlp.widths)
    if len(widths) < 2:
        raise ValueError(
            "architecture.mlp.widths needs at least 2 entries (inputs and outputs), "
            f"got {widths}"
        )
    if len(widths) - 1 > MAX_LAYERS:
        raise ValueError(
            f"architecture.mlp.widths describes {len(widths) - 1} layers, "
            f"more than the limit of {MAX_LAYERS}"
        )
    bad = [(i, w) for i, w in enumerate(widths) if w < 1]
    if bad:
        i, w = bad[0]
        raise ValueError(f"architecture.mlp.widths[{i}] must be at least 1, got {w}")
    if mlp.activation not in _ACTIVATION_NAMES:
        raise ValueError(f"architecture.mlp.activation has unknown value {mlp.activation}")


def _mlp_parameters(mlp: models_pb2.MLPArchitecture) -> list[tuple[str, tuple[int, ...]]]:
    widths = list(mlp.widths)
    out: list[tuple[str, tuple[int, ...]]] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        out.append((f"layers.{i}.weight", (fan_out, fan_in)))
        if not mlp.no_bias:
            out.append((f"layers.{i}.bias", (fan_out,)))
    return out


def _mlp_hidden_dims(mlp: models_pb2.MLPArchitecture) -> list[int]:
    return list(mlp.widths)[1:-1]


def _mlp_io(mlp: models_pb2.MLPArchitecture) -> tuple[list[int], list[int]]:
    return [mlp.widths[0]], [mlp.widths[-1]]


def _mlp_build(mlp: models_pb2.MLPArchitecture) -> torch.nn.Module:
    mlp_class = _mlp_class()
    return mlp_class(list(mlp.widths), _ACTIVATION_NAMES[mlp.activation], bias=not mlp.no_bias)


def _make_activation(name: str) -> torch.nn.Module:
    import torch

    return {
        "relu": torch.nn.ReLU,
        "tanh": torch.nn.Tanh,
        "gelu": torch.nn.GELU,
        "identity": torch.nn.Identity,
    }[name]()


def _define_mlp_class() -> type:
    import torch

    class MLP(torch.nn.Module):
        """Linear layers `layers.0 .. layers.{L-1}` with an activation between them."""

        def __init__(self, widths: list[int], activation: str = "relu", bias: bool = True):
            super().__init__()
            self.widths = list(widths)
            self.activation_name = activation
            self.layers = torch.nn.ModuleList(
                torch.nn.Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])
            )
            self.activation = _make_activation(activation)

        @property
        def num_hidden(self) -> int:
            return len(self.layers) - 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            last = len(self.layers) - 1
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i < last:
                    x = self.activation(x)
            return x

        def forward_with_hidden(
            self, x: torch.Tensor, layer: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """Output and the activations of hidden layer `layer` (1..num_hidden), taken
            after the activation function. The hidden tensor is part of the graph."""
            if not 1 <= layer <= self.num_hidden:
                raise ValueError(
                    f"hidden layer must be in 1..{self.num_hidden}, got {layer}"
                )
            last = len(self.layers) - 1
            hidden = None
            for i, lin in enumerate(self.layers):
                x = lin(x)
                if i < last:
                    x = self.activation(x)
                    if i + 1 == layer:
                        hidden = x
            assert hidden is not None
            return x, hidden

    MLP.__qualname__ = "MLP"  # importable as lambdascope.architectures.MLP (pickle, repr)
    return MLP


_MLP_CLASS: type | None = None


def _mlp_class() -> type:
    global _MLP_CLASS
    if _MLP_CLASS is None:
        _MLP_CLASS = _define_mlp_class()
    return _MLP_CLASS


def __getattr__(name: str) -> Any:
    # `MLP` is defined lazily so that importing this module does not import torch.
    if name == "MLP":
        return _mlp_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_KINDS: dict[str, _Kind] = {
    "mlp": _Kind("mlp", _mlp_validate, _mlp_parameters, _mlp_hidden_dims, _mlp_build, _mlp_io),
}
