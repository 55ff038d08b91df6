"""Torch modules of the built-in architectures that `lambdascope.architectures` describes.

Every activation site `architectures.sites(arch)` names is a submodule of exactly that name
whose forward output is that activation, so other code reads activations with forward hooks
and the modules need no special forward paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lambdascope import architectures
from lambdascope.v1 import models_pb2

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


class MLP(nn.Module):
    """Linear layers `layers.0 .. layers.{L-1}`; hidden layer k's activation is the site
    module `hidden.{k}`. No activation after the last layer."""

    def __init__(self, widths: Sequence[int], activation: str = "relu", bias: bool = True):
        super().__init__()
        widths = list(widths)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])
        )
        self.hidden = nn.ModuleDict(
            {str(k): _ACTIVATIONS[activation]() for k in range(1, len(widths) - 1)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.hidden):
                x = self.hidden[str(i + 1)](x)
        return x


class ConvNet(nn.Module):
    """Conv blocks (same-padded conv -> activation -> 2x2 max-pool, site `conv.{i}`), then an
    MLP `head`. Takes flat inputs of in_channels * image_size**2 values."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        channels: Sequence[int],
        kernel_size: int,
        hidden: Sequence[int],
        outputs: int,
        activation: str = "relu",
    ):
        super().__init__()
        channels = list(channels)
        self.image_shape = (in_channels, image_size, image_size)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size, padding=kernel_size // 2)
            for a, b in zip([in_channels, *channels], channels)
        )
        self.activation = _ACTIVATIONS[activation]()
        self.pool = nn.MaxPool2d(2)
        self.conv = nn.ModuleDict({str(i): nn.Identity() for i in range(1, len(channels) + 1)})
        side = image_size >> len(channels)  # each pool floors the side to half
        self.head = MLP([channels[-1] * side * side, *hidden, outputs], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(-1, self.image_shape)
        for i, conv in enumerate(self.convs, start=1):
            x = self.conv[str(i)](self.pool(self.activation(conv(x))))
        return self.head(x.flatten(-3))


class Autoencoder(nn.Module):
    """MLP `encoder` to the latent code (site `latent`), mirrored MLP `decoder` back."""

    def __init__(self, encoder_widths: Sequence[int], activation: str = "relu"):
        super().__init__()
        widths = list(encoder_widths)
        self.encoder = MLP(widths, activation)
        self.latent = nn.Identity()
        self.decoder = MLP(widths[::-1], activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code, through the `latent` site so its hooks see it."""
        return self.latent(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


class Quadratic(nn.Module):
    """f(x) = <v * v, x>: quadratically parametrised linear regression, output [batch, 1]."""

    def __init__(self, dim: int, init_scale: float = architectures.DEFAULT_INIT_SCALE):
        super().__init__()
        self.v = nn.Parameter(torch.full((dim,), float(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ (self.v * self.v)).unsqueeze(1)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention: one `qkv` projection, one `out` projection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [batch, context, 3 * width] -> q, k, v of [batch, heads, context, width / heads]
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        # The math kernel: the fused CPU kernels have no vmap batching rule (the estimator's
        # chains would run one by one) and no double backward (its Hessian-vector products).
        with sdpa_kernel(SDPBackend.MATH):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(a.transpose(1, 2).flatten(-2))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then + GELU MLP(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP([width, mlp_width, width], "gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Token ids [batch, context] -> logits [batch, outputs] read at the last position. The
    head's input (final LayerNorm, last position) passes through the site `hidden.1`."""

    def __init__(self, vocab_size: int, context: int, width: int, heads: int, layers: int,
                 mlp_width: int, outputs: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(context, width)  # used whole: position i is row i
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, mlp_width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.hidden = nn.ModuleDict({"1": nn.Identity()})
        self.head = nn.Linear(width, outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position.weight
        for block in self.blocks:
            x = block(x)
        return self.head(self.hidden["1"](self.norm(x)[:, -1]))


def build_module(arch: models_pb2.Architecture, *, seed: int | None = None) -> nn.Module:
    """Build a freshly initialised module. With `seed`, the initialisation is reproducible
    and the global torch RNG is left untouched."""
    architectures.validate_architecture(arch)
    field = architectures.architecture_kind(arch)
    build = _BUILDERS[field]
    spec = getattr(arch, field)
    if seed is None:
        return build(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(spec)


def load_weights(module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Load `tensors` into `module`, requiring exactly the module's names and shapes.

    Raises ValueError listing every missing, unexpected, wrong-shaped or non-floating
    tensor; the module is left unchanged when anything is wrong."""
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


def narrow_weights(arch: models_pb2.Architecture, tensors: Mapping[str, torch.Tensor],
                   outputs: int) -> dict[str, torch.Tensor]:
    """Weights of `arch` with the output layer cut to its first `outputs` rows: they fit
    `architectures.narrow_outputs(arch, outputs)` (e.g. a self-modeling network without its
    self-model head, which is what its task loss depends on)."""
    last = architectures.output_layer(arch)
    out = dict(tensors)
    for suffix in ("weight", "bias"):
        name = f"{last}.{suffix}"
        if name in out:
            out[name] = out[name][:outputs].clone()
    return out


def _build_mlp(m: models_pb2.MLPArchitecture) -> nn.Module:
    return MLP(m.widths, architectures.activation_name(m.activation), bias=not m.no_bias)


def _build_dln(d: models_pb2.DeepLinearArchitecture) -> nn.Module:
    return MLP(d.widths, "identity", bias=False)


def _build_convnet(c: models_pb2.ConvNetArchitecture) -> nn.Module:
    return ConvNet(
        c.in_channels, c.image_size, c.channels,
        c.kernel_size or architectures.DEFAULT_KERNEL_SIZE,
        c.hidden, c.outputs, architectures.activation_name(c.activation),
    )


def _build_autoencoder(a: models_pb2.AutoencoderArchitecture) -> nn.Module:
    return Autoencoder(a.encoder_widths, architectures.activation_name(a.activation))


def _build_quadratic(q: models_pb2.QuadraticArchitecture) -> nn.Module:
    return Quadratic(q.dim, q.init_scale or architectures.DEFAULT_INIT_SCALE)


def _build_transformer(t: models_pb2.TransformerArchitecture) -> nn.Module:
    return Transformer(
        t.vocab_size, t.context, t.width, t.heads or architectures.DEFAULT_HEADS, t.layers,
        t.mlp_width or architectures.DEFAULT_MLP_RATIO * t.width, t.outputs,
    )


# One builder per kind `architectures` knows (a test keeps the two in step).
_BUILDERS: dict[str, Callable[[Any], nn.Module]] = {
    "mlp": _build_mlp,
    "dln": _build_dln,
    "convnet": _build_convnet,
    "autoencoder": _build_autoencoder,
    "quadratic": _build_quadratic,
    "transformer": _build_transformer,
}
