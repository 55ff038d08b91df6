"""Built-in architectures: the torch-free description (`architectures`) and the torch modules
(`modules`) must agree on parameters, shapes and activation sites for every kind."""

from __future__ import annotations

import copy
import math
import pathlib
import subprocess
import sys

import pytest
import warnings

import torch
import torch.nn.functional as F

from lambdascope import architectures, modules
from lambdascope.v1 import models_pb2

REPO = pathlib.Path(__file__).resolve().parents[2]


def mlp(*widths: int, **kw) -> models_pb2.Architecture:
    return models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=list(widths), **kw))


def dln(*widths: int) -> models_pb2.Architecture:
    return models_pb2.Architecture(dln=models_pb2.DeepLinearArchitecture(widths=list(widths)))


def convnet(**kw) -> models_pb2.Architecture:
    values = dict(in_channels=1, image_size=8, channels=[4, 6], hidden=[16], outputs=10)
    values.update(kw)
    return models_pb2.Architecture(convnet=models_pb2.ConvNetArchitecture(**values))


def autoencoder(*widths: int, **kw) -> models_pb2.Architecture:
    return models_pb2.Architecture(
        autoencoder=models_pb2.AutoencoderArchitecture(encoder_widths=list(widths), **kw)
    )


def quadratic(dim: int, init_scale: float = 0.0) -> models_pb2.Architecture:
    return models_pb2.Architecture(
        quadratic=models_pb2.QuadraticArchitecture(dim=dim, init_scale=init_scale)
    )


def transformer(**kw) -> models_pb2.Architecture:
    values = dict(vocab_size=7, context=3, width=8, heads=2, layers=2, outputs=5)
    values.update(kw)
    return models_pb2.Architecture(transformer=models_pb2.TransformerArchitecture(**values))


EXAMPLES = {
    "mlp": mlp(64, 32, 16, 10),
    "mlp-no-hidden": mlp(4, 2, activation=models_pb2.ACTIVATION_TANH),
    "dln": dln(5, 4, 3, 2),
    "convnet": convnet(),
    "convnet-odd": convnet(in_channels=2, image_size=7, channels=[3], kernel_size=5, hidden=[],
                           outputs=3, activation=models_pb2.ACTIVATION_TANH),
    "autoencoder": autoencoder(12, 8, 4, 2, activation=models_pb2.ACTIVATION_GELU),
    "autoencoder-shallow": autoencoder(6, 3),
    "quadratic": quadratic(5, 0.5),
    "transformer": transformer(),
    "transformer-defaults": transformer(heads=0, layers=1, mlp_width=0),
}


def example_input(arch: models_pb2.Architecture, n: int) -> torch.Tensor:
    """n random inputs the module takes: floats, or token ids below the vocabulary size."""
    shape = architectures.io_shapes(arch)[0][1:]
    if architectures.input_dtype(arch) == "int64":
        return torch.randint(0, arch.transformer.vocab_size, (n, *shape))
    return torch.randn(n, *shape)



def _record_sites(module: torch.nn.Module, names, x: torch.Tensor):
    """(site name, per-example output shape) in the order the forward reaches the sites."""
    seen = []
    named = dict(module.named_modules())
    handles = [
        named[name].register_forward_hook(
            lambda _m, _i, out, name=name: seen.append((name, tuple(out.shape[1:])))
        )
        for name in names
    ]
    try:
        out = module(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen, out


# ---------------------------------------------------------------------------- every kind


def test_examples_cover_every_kind():
    fields = {f.name for f in models_pb2.Architecture.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert {architectures.architecture_kind(a) for a in EXAMPLES.values()} == fields
    assert set(architectures._KINDS) == set(modules._BUILDERS) == fields


@pytest.mark.parametrize("name", EXAMPLES)
def test_module_matches_description(name):
    arch = EXAMPLES[name]
    module = modules.build_module(arch, seed=0)
    sites = architectures.sites(arch)
    assert {n for n, _ in module.named_modules() if n in sites} == set(sites)
    assert {n: tuple(p.shape) for n, p in module.named_parameters()} == (
        architectures.expected_parameters(arch)
    )
    assert architectures.parameter_count(arch) == sum(p.numel() for p in module.parameters())

    inputs, outputs = architectures.io_shapes(arch)
    seen, out = _record_sites(module, sites, example_input(arch, 3))
    assert seen == list(sites.items())  # each site once, in forward order, with its shape
    assert list(out.shape) == [3, *outputs[1:]]


@pytest.mark.parametrize("name", EXAMPLES)
def test_seed_is_reproducible_and_leaves_global_rng(name):
    arch = EXAMPLES[name]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = modules.build_module(arch, seed=7)
    b = modules.build_module(arch, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_different_seeds_differ():
    a = modules.build_module(convnet(), seed=1).state_dict()
    b = modules.build_module(convnet(), seed=2).state_dict()
    assert not torch.equal(a["convs.0.weight"], b["convs.0.weight"])


@pytest.mark.parametrize("name", EXAMPLES)
def test_load_weights_roundtrip(name):
    arch = EXAMPLES[name]
    src = modules.build_module(arch, seed=1)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.1)  # so that even the deterministic init (quadratic) changes
    dst = modules.build_module(arch, seed=2)
    modules.load_weights(dst, {k: v.double() for k, v in src.state_dict().items()})
    x = example_input(arch, 4)
    torch.testing.assert_close(dst(x), src(x))
    assert all(p.dtype == torch.float32 for p in dst.parameters())


def test_reconstructs_input():
    assert {n for n, a in EXAMPLES.items() if architectures.reconstructs_input(a)} == {
        "autoencoder", "autoencoder-shallow"
    }


# ---------------------------------------------------------------------------- mlp and dln


def test_mlp_parameter_names_and_shapes():
    arch = mlp(64, 32, 16, 10)
    assert architectures.expected_parameters(arch) == {
        "layers.0.weight": (32, 64), "layers.0.bias": (32,),
        "layers.1.weight": (16, 32), "layers.1.bias": (16,),
        "layers.2.weight": (10, 16), "layers.2.bias": (10,),
    }
    assert architectures.hidden_dims(arch) == [32, 16]
    assert architectures.io_shapes(arch) == ([-1, 64], [-1, 10])
    assert architectures.sites(arch) == {"hidden.1": (32,), "hidden.2": (16,)}
    assert architectures.sites(mlp(4, 2)) == {}


def test_mlp_no_bias_and_activations():
    arch = mlp(4, 3, 2, no_bias=True, activation=models_pb2.ACTIVATION_IDENTITY)
    assert architectures.expected_parameters(arch) == {
        "layers.0.weight": (3, 4), "layers.1.weight": (2, 3),
    }
    module = modules.build_module(arch)
    x = torch.randn(5, 4)
    w0, w1 = module.layers[0].weight, module.layers[1].weight
    torch.testing.assert_close(module(x), x @ w0.T @ w1.T)

    relu = modules.build_module(mlp(4, 3, 2), seed=1)
    h = torch.relu(relu.layers[0](x))
    torch.testing.assert_close(relu(x), relu.layers[1](h))  # none after the last layer
    captured = []
    site = dict(relu.named_modules())["hidden.1"]
    handle = site.register_forward_hook(lambda _m, _i, out: captured.append(out))
    relu(x)
    handle.remove()
    torch.testing.assert_close(captured[0], h)  # the site sees the activation's output


def test_dln_is_a_bias_free_linear_mlp():
    arch = dln(4, 3, 2)
    assert architectures.expected_parameters(arch) == architectures.expected_parameters(
        mlp(4, 3, 2, no_bias=True, activation=models_pb2.ACTIVATION_IDENTITY)
    )
    assert architectures.hidden_dims(arch) == [3]
    assert architectures.sites(arch) == {"hidden.1": (3,)}
    module = modules.build_module(arch, seed=0)
    x = -torch.rand(5, 4)  # negative: a ReLU would change the result
    torch.testing.assert_close(module(x), x @ module.layers[0].weight.T @ module.layers[1].weight.T)


# ---------------------------------------------------------------------------- convnet


def test_convnet_layout():
    arch = convnet()  # 1x8x8 -> conv 4 -> 4x4x4 -> conv 6 -> 6x2x2 -> 24 -> 16 -> 10
    assert architectures.expected_parameters(arch) == {
        "convs.0.weight": (4, 1, 3, 3), "convs.0.bias": (4,),
        "convs.1.weight": (6, 4, 3, 3), "convs.1.bias": (6,),
        "head.layers.0.weight": (16, 24), "head.layers.0.bias": (16,),
        "head.layers.1.weight": (10, 16), "head.layers.1.bias": (10,),
    }
    assert architectures.io_shapes(arch) == ([-1, 64], [-1, 10])
    assert architectures.hidden_dims(arch) == [16]
    assert architectures.sites(arch) == {
        "conv.1": (4, 4, 4), "conv.2": (6, 2, 2), "head.hidden.1": (16,),
    }
    odd = EXAMPLES["convnet-odd"]  # 2x7x7 -> conv 3 (5x5) -> 3x3x3 -> 27 -> 3
    assert architectures.sites(odd) == {"conv.1": (3, 3, 3)}
    assert architectures.expected_parameters(odd)["convs.0.weight"] == (3, 2, 5, 5)
    assert architectures.io_shapes(odd) == ([-1, 98], [-1, 3])


def test_convnet_forward_matches_reference():
    arch = EXAMPLES["convnet-odd"]
    module = modules.build_module(arch, seed=0)
    x = torch.randn(4, 98)
    conv = module.convs[0]
    h = F.max_pool2d(torch.tanh(F.conv2d(x.reshape(4, 2, 7, 7), conv.weight, conv.bias,
                                         padding=2)), 2)
    head = module.head.layers[0]
    torch.testing.assert_close(module(x), F.linear(h.reshape(4, -1), head.weight, head.bias))


# ---------------------------------------------------------------------------- autoencoder


def test_autoencoder_layout_and_encode():
    arch = autoencoder(6, 4, 2)
    assert architectures.expected_parameters(arch) == {
        "encoder.layers.0.weight": (4, 6), "encoder.layers.0.bias": (4,),
        "encoder.layers.1.weight": (2, 4), "encoder.layers.1.bias": (2,),
        "decoder.layers.0.weight": (4, 2), "decoder.layers.0.bias": (4,),
        "decoder.layers.1.weight": (6, 4), "decoder.layers.1.bias": (6,),
    }
    assert architectures.io_shapes(arch) == ([-1, 6], [-1, 6])
    assert architectures.hidden_dims(arch) == []
    assert list(architectures.sites(arch).items()) == [
        ("encoder.hidden.1", (4,)), ("latent", (2,)), ("decoder.hidden.1", (4,)),
    ]
    module = modules.build_module(arch, seed=0)
    x = torch.randn(64, 6)
    enc, dec = module.encoder.layers, module.decoder.layers
    code = enc[1](torch.relu(enc[0](x)))
    assert (code < 0).any()  # no activation on the latent code
    seen, out = _record_sites(module, ["latent"], x)
    assert seen == [("latent", (2,))]
    torch.testing.assert_close(out, dec[1](torch.relu(dec[0](code))))  # none on the output
    captured = []
    handle = module.latent.register_forward_hook(lambda _m, _i, o: captured.append(o))
    torch.testing.assert_close(module.encode(x), code)
    handle.remove()
    torch.testing.assert_close(captured[0], code)  # encode goes through the site


# ---------------------------------------------------------------------------- quadratic


def test_quadratic():
    arch = quadratic(3, -0.5)
    assert architectures.expected_parameters(arch) == {"v": (3,)}
    assert architectures.io_shapes(arch) == ([-1, 3], [-1, 1])
    assert architectures.sites(arch) == {} and architectures.hidden_dims(arch) == []
    module = modules.build_module(arch)
    assert torch.equal(module.v.detach(), torch.full((3,), -0.5))
    x = torch.randn(4, 3)
    torch.testing.assert_close(module(x), 0.25 * x.sum(dim=1, keepdim=True))
    assert torch.equal(modules.build_module(quadratic(2)).v.detach(), torch.ones(2))  # 0 -> 1


# ---------------------------------------------------------------------------- transformer


def test_transformer_layout():
    arch = transformer(vocab_size=7, context=3, width=8, heads=2, layers=1, mlp_width=12)
    expected = architectures.expected_parameters(arch)
    assert list(expected.items()) == [
        ("embed.weight", (7, 8)), ("position.weight", (3, 8)),
        ("blocks.0.attention_norm.weight", (8,)), ("blocks.0.attention_norm.bias", (8,)),
        ("blocks.0.attention.qkv.weight", (24, 8)), ("blocks.0.attention.qkv.bias", (24,)),
        ("blocks.0.attention.out.weight", (8, 8)), ("blocks.0.attention.out.bias", (8,)),
        ("blocks.0.mlp_norm.weight", (8,)), ("blocks.0.mlp_norm.bias", (8,)),
        ("blocks.0.mlp.layers.0.weight", (12, 8)), ("blocks.0.mlp.layers.0.bias", (12,)),
        ("blocks.0.mlp.layers.1.weight", (8, 12)), ("blocks.0.mlp.layers.1.bias", (8,)),
        ("norm.weight", (8,)), ("norm.bias", (8,)),
        ("head.weight", (5, 8)), ("head.bias", (5,)),
    ]
    # the state_dict has exactly these tensors, in this order (what the registry checks)
    state = modules.build_module(arch, seed=0).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == list(expected.items())
    assert architectures.io_shapes(arch) == ([-1, 3], [-1, 5])
    assert architectures.input_dtype(arch) == "int64"
    assert {architectures.input_dtype(a) for n, a in EXAMPLES.items()
            if not n.startswith("transformer")} == {"float32"}
    assert architectures.sites(arch) == {"hidden.1": (8,)}
    assert architectures.hidden_dims(arch) == [8]
    assert architectures.hidden_site(arch, 1) == "hidden.1"
    assert architectures.output_layer(arch) == "head"
    # heads 0 means 1, mlp_width 0 means 4 * width; blocks repeat the layout
    defaults = architectures.expected_parameters(transformer(heads=0, mlp_width=0, layers=3))
    assert defaults["blocks.2.mlp.layers.0.weight"] == (32, 8)
    assert modules.build_module(transformer(heads=0)).blocks[0].attention.heads == 1


def _reference_transformer(module: modules.Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """The same network written out with plain ops and an explicit causal mask."""
    x = module.embed.weight[tokens] + module.position.weight
    n, t, d = x.shape
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for block in module.blocks:
        attention = block.attention
        h = F.layer_norm(x, (d,), block.attention_norm.weight, block.attention_norm.bias)
        q, k, v = F.linear(h, attention.qkv.weight, attention.qkv.bias).split(d, dim=-1)
        heads = attention.heads
        q, k, v = (z.reshape(n, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(d // heads)).masked_fill(~causal, -math.inf)
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
        x = x + F.linear(a, attention.out.weight, attention.out.bias)
        h = F.layer_norm(x, (d,), block.mlp_norm.weight, block.mlp_norm.bias)
        up, down = block.mlp.layers
        x = x + down(F.gelu(up(h)))
    last = F.layer_norm(x, (d,), module.norm.weight, module.norm.bias)[:, -1]
    return module.head(last)


def test_transformer_forward_matches_reference():
    arch = transformer(context=4, layers=2)  # two layers: earlier positions reach the last one
    module = modules.build_module(arch, seed=0)
    tokens = example_input(arch, 6)
    torch.testing.assert_close(module(tokens), _reference_transformer(module, tokens))
    # causal: the last position's logits depend on every token, earlier outputs on none after them
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 7
    assert not torch.allclose(module(changed), module(tokens))
    block, x = module.blocks[0], torch.randn(6, 4, 8)
    later = x.clone()
    later[:, -1] += 1.0
    torch.testing.assert_close(block.attention(x)[:, :-1], block.attention(later)[:, :-1])


def test_transformer_runs_as_vmapped_chains_with_double_backward():
    """What the estimator needs: chains of parameters under vmap (batched kernels, no per-chain
    fallback), matching chain-by-chain values, and Hessian-vector products."""
    arch = transformer()
    module = modules.build_module(arch, seed=0)
    tokens, labels = example_input(arch, 10), torch.randint(0, 5, (10,))
    chains = [modules.build_module(arch, seed=s).state_dict() for s in range(3)]
    stacked = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}

    def loss(params, x, y):
        return F.cross_entropy(torch.func.functional_call(module, params, (x,)), y)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "we have not yet implemented the batching rule"
        together = torch.vmap(loss, in_dims=(0, None, None))(stacked, tokens, labels)
        grads = torch.vmap(torch.func.grad(loss), in_dims=(0, None, None))(stacked, tokens, labels)
    torch.testing.assert_close(together, torch.stack([loss(c, tokens, labels) for c in chains]))
    assert all(torch.isfinite(g).all() for g in grads.values())
    params = {k: v.clone().requires_grad_() for k, v in chains[0].items()}
    first = torch.autograd.grad(loss(params, tokens, labels), list(params.values()),
                                create_graph=True)
    hvp = torch.autograd.grad(sum(g.square().sum() for g in first), list(params.values()))
    assert all(torch.isfinite(h).all() for h in hvp) and any(h.abs().sum() > 0 for h in hvp)


def test_transformer_output_head_resizes():
    arch = transformer()
    wide = architectures.widen_outputs(arch, 8)
    assert wide.transformer.outputs == 13 and arch.transformer.outputs == 5
    assert architectures.narrow_outputs(wide, 5) == arch
    module = modules.build_module(wide, seed=0)
    narrow = modules.build_module(arch)
    modules.load_weights(narrow, modules.narrow_weights(wide, module.state_dict(), 5))
    tokens = example_input(arch, 4)
    torch.testing.assert_close(narrow(tokens), module(tokens)[:, :5])


# ---------------------------------------------------------------------------- self-modeling helpers


def test_hidden_site():
    arch = mlp(64, 32, 16, 10)
    assert [architectures.hidden_site(arch, k) for k in (1, 2)] == ["hidden.1", "hidden.2"]
    assert architectures.hidden_site(dln(5, 4, 3), 1) == "hidden.1"
    assert architectures.hidden_site(convnet(hidden=[16, 8]), 2) == "head.hidden.2"
    for a in (arch, dln(5, 4, 3), convnet(hidden=[16, 8])):
        sites, widths = architectures.sites(a), architectures.hidden_dims(a)
        for k, width in enumerate(widths, start=1):
            assert sites[architectures.hidden_site(a, k)] == (width,)


@pytest.mark.parametrize(
    "arch, layer, message",
    [
        (mlp(64, 32, 16, 10), 5,
         "self_modeling.layer must be in 1..2 for this architecture, got 5"),
        (mlp(64, 32, 16, 10), 0, "self_modeling.layer must be in 1..2"),
        (convnet(), 2, "self_modeling.layer must be in 1..1 for this architecture, got 2"),
        (mlp(64, 10), 1, "self_modeling.layer: architecture.mlp has no hidden layer"),
        (convnet(hidden=[]), 1, "self_modeling.layer: architecture.convnet has no hidden layer"),
        (autoencoder(6, 2), 1,
         "self_modeling needs an architecture with hidden layers (mlp, dln, convnet or "
         "transformer), got architecture.autoencoder"),
        (quadratic(3), 1, "got architecture.quadratic"),
    ],
)
def test_hidden_site_errors(arch, layer, message):
    with pytest.raises(ValueError) as err:
        architectures.hidden_site(arch, layer)
    assert message in str(err.value)


def test_widen_and_narrow_outputs():
    arch = mlp(64, 32, 10)
    wide = architectures.widen_outputs(arch, 32)
    assert list(wide.mlp.widths) == [64, 32, 42] and list(arch.mlp.widths) == [64, 32, 10]
    assert architectures.narrow_outputs(wide, 10) == arch
    assert list(architectures.widen_outputs(dln(3, 2), 1).dln.widths) == [3, 3]
    wide_conv = architectures.widen_outputs(convnet(), 16)
    assert wide_conv.convnet.outputs == 26 and convnet().convnet.outputs == 10
    assert architectures.narrow_outputs(wide_conv, 10) == convnet()
    assert architectures.widen_outputs(arch, 0) == arch


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: architectures.widen_outputs(autoencoder(6, 2), 1),
         "architecture.autoencoder has no output layer"),
        (lambda: architectures.narrow_outputs(quadratic(2), 1),
         "architecture.quadratic has no output layer"),
        (lambda: architectures.widen_outputs(mlp(4, 2), -1), "at least 0, got -1"),
        (lambda: architectures.narrow_outputs(mlp(4, 2), 3),
         "outputs must be in 1..2 for architecture.mlp, got 3"),
        (lambda: architectures.narrow_outputs(convnet(), 0), "outputs must be in 1..10"),
        (lambda: architectures.widen_outputs(mlp(100_000, 1), 10_000),
         "more than the limit of 500,000,000"),
        (lambda: architectures.output_layer(autoencoder(6, 2)), "no output layer"),
    ],
)
def test_output_resizing_errors(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


@pytest.mark.parametrize(
    "arch, layer",
    [
        (mlp(64, 32, 10), "layers.1"),
        (dln(4, 3, 3, 2), "layers.2"),
        (convnet(), "head.layers.1"),
        (convnet(hidden=[]), "head.layers.0"),
    ],
)
def test_output_layer(arch, layer):
    assert architectures.output_layer(arch) == layer
    outputs = architectures.io_shapes(arch)[1][-1]
    assert architectures.expected_parameters(arch)[f"{layer}.weight"][0] == outputs
    assert list(architectures.expected_parameters(arch))[-1].startswith(f"{layer}.")  # the last


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "arch, message",
    [
        (models_pb2.Architecture(), "architecture is not set"),
        (mlp(64),
         "architecture.mlp.widths needs at least 2 entries (inputs and outputs), got [64]"),
        (mlp(), "architecture.mlp.widths needs at least 2 entries"),
        (mlp(64, 0, 10), "architecture.mlp.widths[1] must be at least 1, got 0"),
        (mlp(64, -3), "architecture.mlp.widths[1] must be at least 1"),
        (mlp(100_000, 100_000), "architecture.mlp has 10,000,100,000 parameters"),
        (mlp(4, 2, activation=99), "architecture.mlp.activation has unknown value 99"),
        (mlp(*[1] * 1002), "architecture.mlp.widths describes 1001 layers, more than the limit"),
        (dln(4), "architecture.dln.widths needs at least 2 entries"),
        (dln(4, 0, 2), "architecture.dln.widths[1] must be at least 1, got 0"),
        (dln(100_000, 100_000), "architecture.dln has 10,000,000,000 parameters"),
        (convnet(kernel_size=4), "architecture.convnet.kernel_size must be odd, got 4"),
        (convnet(kernel_size=-3), "architecture.convnet.kernel_size must be positive"),
        (convnet(kernel_size=19),
         "architecture.convnet.kernel_size must be at most 2 * image_size + 1 = 17, got 19"),
        (convnet(channels=[4, 4, 4], image_size=4),
         "architecture.convnet.image_size must be at least 2**3 for 3 conv blocks"),
        (convnet(image_size=0), "architecture.convnet.image_size must be at least 1, got 0"),
        (convnet(channels=[]), "architecture.convnet.channels needs at least 1 entry"),
        (convnet(channels=[4, 0]), "architecture.convnet.channels[1] must be at least 1, got 0"),
        (convnet(in_channels=0), "architecture.convnet.in_channels must be at least 1, got 0"),
        (convnet(hidden=[8, 0]), "architecture.convnet.hidden[1] must be at least 1, got 0"),
        (convnet(outputs=0), "architecture.convnet.outputs must be at least 1, got 0"),
        (convnet(activation=7), "architecture.convnet.activation has unknown value 7"),
        (convnet(channels=[1] * 1000), "architecture.convnet describes 1002 layers"),
        (convnet(image_size=65536, channels=[1], hidden=[1000]),
         "architecture.convnet has 1,073,741,835,020 parameters"),
        (autoencoder(5),
         "architecture.autoencoder.encoder_widths needs at least 2 entries "
         "(inputs and latent code), got [5]"),
        (autoencoder(5, -1),
         "architecture.autoencoder.encoder_widths[1] must be at least 1, got -1"),
        (autoencoder(5, 2, activation=42),
         "architecture.autoencoder.activation has unknown value 42"),
        (autoencoder(*[1] * 502), "architecture.autoencoder describes 1002 layers"),
        (quadratic(0), "architecture.quadratic.dim must be at least 1, got 0"),
        (quadratic(3, math.nan), "architecture.quadratic.init_scale must be finite, got nan"),
        (quadratic(3, -math.inf), "architecture.quadratic.init_scale must be finite, got -inf"),
        (transformer(width=10, heads=4),
         "architecture.transformer.width (10) must be a multiple of heads (4)"),
        (transformer(width=6, heads=0, mlp_width=0, vocab_size=0),
         "architecture.transformer.vocab_size must be at least 1, got 0"),
        (transformer(context=0), "architecture.transformer.context must be at least 1, got 0"),
        (transformer(width=-8), "architecture.transformer.width must be at least 1, got -8"),
        (transformer(layers=0), "architecture.transformer.layers must be at least 1, got 0"),
        (transformer(outputs=0), "architecture.transformer.outputs must be at least 1, got 0"),
        (transformer(heads=-2),
         "architecture.transformer.heads must be positive (0 means 1), got -2"),
        (transformer(mlp_width=-1),
         "architecture.transformer.mlp_width must be positive (0 means 4 * width), got -1"),
        (transformer(context=10_000),
         "architecture.transformer.context must be at most 8,192 (attention scores grow"),
        (transformer(layers=1001), "architecture.transformer.layers describes 1001 layers"),
        (transformer(vocab_size=100_000, width=8_192),
         "architecture.transformer has 2,430,107,653 parameters"),
    ],
)
def test_validation_names_the_field(arch, message):
    with pytest.raises(ValueError) as err:
        architectures.validate_architecture(arch)
    assert message in str(err.value)
    for call in (modules.build_module, architectures.expected_parameters, architectures.sites,
                 architectures.io_shapes, architectures.hidden_dims):
        with pytest.raises(ValueError):
            call(arch)


def test_smallest_valid_convnet():
    arch = convnet(image_size=4, channels=[2, 2], hidden=[], kernel_size=9)  # 4 -> 2 -> 1
    architectures.validate_architecture(arch)
    module = modules.build_module(arch)
    assert module(torch.randn(2, 16)).shape == (2, 10)


def test_rejects_non_architecture():
    with pytest.raises(TypeError, match="lambdascope.v1.Architecture"):
        architectures.validate_architecture(models_pb2.MLPArchitecture(widths=[2, 1]))


# ---------------------------------------------------------------------------- load_weights


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda t: t.pop("layers.1.bias"), "missing tensors: layers.1.bias"),
        (lambda t: t.update({"layers.2.weight": torch.zeros(1)}),
         "unexpected tensors: layers.2.weight"),
        (lambda t: t.update({"layers.0.weight": torch.zeros(6, 5)}),
         "wrong shapes: layers.0.weight: expected [5, 6], got [6, 5]"),
        (lambda t: t.update({"layers.0.bias": torch.zeros(5, dtype=torch.int64)}), "wrong dtypes"),
    ],
)
def test_load_weights_rejects_mismatches(edit, fragment):
    module = modules.build_module(mlp(6, 5, 3), seed=0)
    before = copy.deepcopy(module.state_dict())
    tensors = {k: torch.ones_like(v) for k, v in module.state_dict().items()}
    edit(tensors)
    with pytest.raises(ValueError) as err:
        modules.load_weights(module, tensors)
    assert fragment in str(err.value)
    for k, v in module.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


def test_load_weights_lists_every_problem():
    module = modules.build_module(mlp(6, 5, 3))
    tensors = {"layers.0.weight": torch.zeros(5, 6), "bogus": torch.zeros(1)}
    with pytest.raises(ValueError) as err:
        modules.load_weights(module, tensors)
    text = str(err.value)
    assert "layers.0.bias" in text and "layers.1.weight" in text and "bogus" in text


# ---------------------------------------------------------------------------- no torch


def test_architectures_does_not_import_torch():
    # The registry validates uploads with it and must stay torch-free.
    code = "import lambdascope.architectures, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
