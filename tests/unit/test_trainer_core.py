"""Built-in architectures, self-modeling objective and the plain-PyTorch training loop."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from lambdascope import architectures
from lambdascope.v1 import models_pb2
from services.trainer.datasets import load_digits_dataset, train_test_split
from services.trainer.self_modeling import (
    self_modeling_architecture,
    self_modeling_loss,
    task_architecture,
    task_state_dict,
)
from services.trainer.training import TrainConfig, checkpoint_steps, train


def mlp(*widths: int, **kw) -> models_pb2.Architecture:
    return models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=list(widths), **kw))


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny models on a shared 2-core machine: more threads only add spin-waiting contention
    # (measured 10-20x slower when another process is busy).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits_dataset()
    return train_test_split(x, y, 0.2, seed=0)


def base_config(**kw) -> TrainConfig:
    values = dict(
        epochs=1, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9,
        loss="cross_entropy", task_outputs=10,
    )
    values.update(kw)
    return TrainConfig(**values)


# ---------------------------------------------------------------------------- architectures


def test_mlp_parameter_names_and_shapes():
    arch = mlp(64, 32, 16, 10)
    expected = {
        "layers.0.weight": (32, 64), "layers.0.bias": (32,),
        "layers.1.weight": (16, 32), "layers.1.bias": (16,),
        "layers.2.weight": (10, 16), "layers.2.bias": (10,),
    }
    assert architectures.expected_parameters(arch) == expected
    module = architectures.build_module(arch)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    assert architectures.hidden_dims(arch) == [32, 16]
    assert architectures.io_shapes(arch) == ([-1, 64], [-1, 10])
    assert architectures.parameter_count(arch) == sum(p.numel() for p in module.parameters())
    assert module(torch.zeros(3, 64)).shape == (3, 10)


def test_mlp_no_bias_and_activations():
    arch = mlp(4, 3, 2, no_bias=True, activation=models_pb2.ACTIVATION_IDENTITY)
    assert architectures.expected_parameters(arch) == {
        "layers.0.weight": (3, 4), "layers.1.weight": (2, 3),
    }
    module = architectures.build_module(arch)
    x = torch.randn(5, 4)
    w0, w1 = module.layers[0].weight, module.layers[1].weight
    torch.testing.assert_close(module(x), x @ w0.T @ w1.T)
    relu = architectures.build_module(mlp(4, 3, 2), seed=1)
    h = torch.relu(relu.layers[0](x))
    torch.testing.assert_close(relu(x), relu.layers[1](h))  # none after the last layer
    out, hidden = relu.forward_with_hidden(x, 1)
    torch.testing.assert_close(hidden, h)
    torch.testing.assert_close(out, relu(x))


def test_build_module_seed_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = architectures.build_module(mlp(8, 4, 2), seed=7)
    b = architectures.build_module(mlp(8, 4, 2), seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


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
        (mlp(4, 2, activation=99), "architecture.mlp.activation"),
    ],
)
def test_validation_names_the_field(arch, message):
    with pytest.raises(ValueError) as err:
        architectures.validate_architecture(arch)
    assert message in str(err.value)
    with pytest.raises(ValueError):
        architectures.build_module(arch)
    with pytest.raises(ValueError):
        architectures.expected_parameters(arch)


def test_load_weights_roundtrip():
    arch = mlp(6, 5, 3)
    src = architectures.build_module(arch, seed=1)
    dst = architectures.build_module(arch, seed=2)
    architectures.load_weights(dst, {k: v.double() for k, v in src.state_dict().items()})
    x = torch.randn(4, 6)
    torch.testing.assert_close(dst(x), src(x))
    assert dst.layers[0].weight.dtype == torch.float32


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
    module = architectures.build_module(mlp(6, 5, 3), seed=0)
    before = copy.deepcopy(module.state_dict())
    tensors = {k: torch.ones_like(v) for k, v in module.state_dict().items()}
    edit(tensors)
    with pytest.raises(ValueError) as err:
        architectures.load_weights(module, tensors)
    assert fragment in str(err.value)
    for k, v in module.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


def test_load_weights_lists_every_problem():
    module = architectures.build_module(mlp(6, 5, 3))
    tensors = {"layers.0.weight": torch.zeros(5, 6), "bogus": torch.zeros(1)}
    with pytest.raises(ValueError) as err:
        architectures.load_weights(module, tensors)
    text = str(err.value)
    assert "layers.0.bias" in text and "layers.1.weight" in text and "bogus" in text


# ---------------------------------------------------------------------------- self-modeling


def test_self_modeling_architecture_widens_output():
    arch = mlp(64, 32, 16, 10)
    assert list(self_modeling_architecture(arch, 1).mlp.widths) == [64, 32, 16, 42]
    assert list(self_modeling_architecture(arch, 2).mlp.widths) == [64, 32, 16, 26]
    assert list(arch.mlp.widths) == [64, 32, 16, 10]  # the input is not modified
    for bad in (0, 3, -1):
        with pytest.raises(ValueError, match="self_modeling.layer"):
            self_modeling_architecture(arch, bad)
    with pytest.raises(ValueError, match="no hidden layer"):
        self_modeling_architecture(mlp(64, 10), 1)


def _grads(module, loss):
    module.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def test_self_model_target_is_detached():
    torch.manual_seed(0)
    module = architectures.build_module(self_modeling_architecture(mlp(8, 6, 5, 3), 1), seed=0)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    weight = 5.0

    got = _grads(module, self_modeling_loss(module, x, y, 3, 1, weight).total)

    # Reference: the target is a constant computed in a separate no-grad pass.
    with torch.no_grad():
        _, target = module.forward_with_hidden(x, 1)
    out, _ = module.forward_with_hidden(x, 1)
    reference = F.cross_entropy(out[:, :3], y) + weight * F.mse_loss(out[:, 3:], target)
    want = _grads(module, reference)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)

    # The test has power: an attached target gives a different gradient in the first layer.
    out, h = module.forward_with_hidden(x, 1)
    attached = F.cross_entropy(out[:, :3], y) + weight * F.mse_loss(out[:, 3:], h)
    wrong = _grads(module, attached)
    assert not torch.allclose(wrong["layers.0.weight"], want["layers.0.weight"], atol=1e-6)


def test_self_model_loss_gradient_through_target_path_is_zero():
    module = architectures.build_module(self_modeling_architecture(mlp(8, 6, 3), 1), seed=0)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    # With the self-model rows of the last layer zeroed, the prediction no longer depends on
    # h, so any gradient of the MSE term reaching the first layer would come through the
    # target: there must be none.
    with torch.no_grad():
        module.layers[1].weight[3:].zero_()
        module.layers[1].bias[3:].zero_()
    r = self_modeling_loss(module, x, y, 3, 1, 1.0)
    (g,) = torch.autograd.grad(r.self_model, module.layers[0].weight)
    assert torch.count_nonzero(g) == 0


def test_self_modeling_weight_zero_equals_plain_task_loss():
    module = architectures.build_module(self_modeling_architecture(mlp(8, 6, 3), 1), seed=3)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    r = self_modeling_loss(module, x, y, 3, 1, 0.0)
    torch.testing.assert_close(r.total, r.task)
    got = _grads(module, r.total)
    want = _grads(module, F.cross_entropy(module(x)[:, :3], y))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    assert torch.count_nonzero(got["layers.1.weight"][3:]) == 0


def test_task_state_dict_strips_self_model_rows():
    base = mlp(8, 6, 3)
    widened = self_modeling_architecture(base, 1)
    module = architectures.build_module(widened, seed=0)
    assert task_architecture(widened, 3) == base
    task_module = architectures.build_module(base)
    architectures.load_weights(task_module, task_state_dict(module.state_dict(), widened, 3))
    x = torch.randn(4, 8)
    torch.testing.assert_close(task_module(x), module(x)[:, :3])


# ---------------------------------------------------------------------------- training loop


def test_checkpoint_steps_log_spaced_distinct_and_final():
    assert checkpoint_steps(1000, 1) == [1000]
    assert checkpoint_steps(5, 10) == [1, 2, 3, 4, 5]
    assert checkpoint_steps(1000, 4) == [1, 10, 100, 1000]
    for total, count in [(1150, 10), (7, 6), (100_000, 50), (3, 2), (1, 1)]:
        steps = checkpoint_steps(total, count)
        assert len(steps) == min(count, total)
        assert steps == sorted(set(steps))
        assert steps[-1] == total and steps[0] >= 1
    steps = checkpoint_steps(100_000, 11)  # evenly spaced in log: ratios about 10**0.5
    ratios = [b / a for a, b in zip(steps[1:], steps[2:])]
    assert all(abs(math.log10(r) - 0.5) < 0.05 for r in ratios)
    with pytest.raises(ValueError):
        checkpoint_steps(0, 1)


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(loss="hinge"), "loss"),
        (dict(task_outputs=0), "task_outputs"),
        (dict(momentum=1.0), "momentum"),
        (dict(optimizer="adam", momentum=0.9), "momentum"),
        (dict(momentum=0.0, nesterov=True), "nesterov"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(seed=-1), "seed"),
        (dict(self_model_layer=-1), "self_model_layer"),
        (dict(self_model_layer=1, self_model_weight=-1.0), "self_model_weight"),
        (dict(self_model_weight=1.0), "self_model_weight"),
        (dict(checkpoints=0), "checkpoints"),
    ],
)
def test_config_validation_names_the_field(change, field):
    config = dataclasses.replace(base_config(), **change)
    with pytest.raises(ValueError, match=field):
        config.validate()


def test_train_rejects_mismatched_module(digits):
    xtr, ytr, xte, yte = digits
    with pytest.raises(ValueError, match="task_outputs"):
        train(architectures.build_module(mlp(64, 8, 7)), xtr, ytr, xte, yte, base_config())
    with pytest.raises(ValueError, match="hidden layer 1"):
        train(architectures.build_module(mlp(64, 8, 10)), xtr, ytr, xte, yte,
              base_config(self_model_layer=1, self_model_weight=1.0))
    with pytest.raises(ValueError, match="self_model_layer"):
        train(architectures.build_module(mlp(64, 8, 18)), xtr, ytr, xte, yte,
              base_config(self_model_layer=2, self_model_weight=1.0))


def _train_digits(digits, seed, **kw):
    xtr, ytr, xte, yte = digits
    config = base_config(epochs=10, seed=seed, checkpoints=5, **kw)
    widths = [64, 32, 10]
    arch = mlp(*widths)
    if config.self_modeling:
        arch = self_modeling_architecture(arch, config.self_model_layer)
    module = architectures.build_module(arch, seed=seed)
    progress, saved = [], []
    result = train(
        module, xtr, ytr, xte, yte, config,
        on_progress=lambda step, total, m: progress.append((step, total, m)),
        on_checkpoint=lambda step, state: saved.append((step, state)),
    )
    return module, result, progress, saved


def test_training_digits_reaches_accuracy_and_is_deterministic(digits):
    module, result, progress, saved = _train_digits(digits, seed=0)
    assert result.metrics["test_accuracy"] > 0.9
    assert result.metrics["train_accuracy"] > 0.9
    assert set(result.metrics) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    steps_per_epoch = math.ceil(len(digits[0]) / 64)
    assert result.steps == 10 * steps_per_epoch

    # Progress: about 100 reports, the last at the final step, with loss and accuracy.
    assert 50 <= len(progress) <= 101
    assert progress[-1][0] == progress[-1][1] == result.steps
    assert set(progress[-1][2]) == {"loss", "accuracy", "epoch"}
    assert progress[-1][2]["epoch"] == pytest.approx(10.0)
    # Checkpoints: at checkpoint_steps, detached copies, the last one equal to the result.
    assert [s for s, _ in saved] == checkpoint_steps(result.steps, 5) == result.checkpoint_steps
    for name, tensor in module.state_dict().items():
        assert torch.equal(saved[-1][1][name], tensor)
        assert saved[-1][1][name].data_ptr() != tensor.data_ptr()
        assert not torch.equal(saved[0][1][name], tensor)

    module2, result2, progress2, _ = _train_digits(digits, seed=0)
    assert result2.metrics == result.metrics
    assert [p[2] for p in progress2] == [p[2] for p in progress]
    for name, tensor in module.state_dict().items():
        assert torch.equal(module2.state_dict()[name], tensor)


def test_training_with_self_modeling(digits):
    module, result, progress, _ = _train_digits(
        digits, seed=1, self_model_layer=1, self_model_weight=10.0
    )
    assert module.layers[-1].out_features == 42
    assert result.metrics["test_accuracy"] > 0.9
    assert {"train_self_model_loss", "test_self_model_loss"} <= set(result.metrics)
    assert set(progress[-1][2]) == {"loss", "task_loss", "self_model_loss", "accuracy", "epoch"}
    first, last = progress[0][2], progress[-1][2]
    assert last["self_model_loss"] < first["self_model_loss"]
    assert last["loss"] == pytest.approx(last["task_loss"] + 10.0 * last["self_model_loss"])


def test_training_adam_and_mse_on_labels(digits):
    xtr, ytr, xte, yte = digits
    module = architectures.build_module(mlp(64, 32, 10), seed=0)
    config = base_config(epochs=5, optimizer="adam", lr=3e-3, momentum=0.0, loss="mse")
    result = train(module, xtr, ytr, xte, yte, config)
    assert result.metrics["test_accuracy"] > 0.85  # MSE on one-hot targets still classifies


def test_train_test_split_is_seeded():
    x, y = torch.arange(100.0).unsqueeze(1), torch.arange(100)
    a = train_test_split(x, y, 0.25, seed=3)
    b = train_test_split(x, y, 0.25, seed=3)
    c = train_test_split(x, y, 0.25, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[2], c[2])
    assert (len(a[0]), len(a[2])) == (75, 25)
    assert sorted(torch.cat([a[1], a[3]]).tolist()) == list(range(100))
    assert torch.equal(a[0].squeeze(1).long(), a[1])
    assert len(train_test_split(x, y, 0.0, seed=0)[2]) == 0
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(x, y, 1.0, seed=0)


def test_digits_dataset():
    x, y = load_digits_dataset()
    assert x.shape == (1797, 64) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))


def test_divergence_raises(digits):
    xtr, ytr, xte, yte = digits
    module = architectures.build_module(mlp(64, 32, 10), seed=0)
    with torch.no_grad():
        module.layers[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        train(module, xtr, ytr, xte, yte, base_config())
