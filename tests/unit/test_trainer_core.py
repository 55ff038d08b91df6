"""Self-modeling architecture helpers and the plain-PyTorch training loop."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lambdascope import modules
from lambdascope.training.datasets import load_digits_dataset, split
from lambdascope.training.loop import TrainConfig, checkpoint_steps, train
from lambdascope.v1 import models_pb2
from services.trainer.translate import (
    self_modeling_architecture,
    task_architecture,
    task_state_dict,
)


def train_test_split(x, y, test_fraction, seed):
    """(x_train, y_train, x_test, y_test) of `datasets.split`."""
    data = split(x, y, test_fraction, seed)
    return data.x_train, data.y_train, data.x_test, data.y_test


def mlp(*widths: int, **kw) -> models_pb2.Architecture:
    return models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=list(widths), **kw))


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


def test_task_state_dict_strips_self_model_rows():
    base = mlp(8, 6, 3)
    widened = self_modeling_architecture(base, 1)
    module = modules.build_module(widened, seed=0)
    assert task_architecture(widened, 3) == base
    task_module = modules.build_module(base)
    modules.load_weights(task_module, task_state_dict(module.state_dict(), widened, 3))
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
        (dict(self_model_site="hidden.1", self_model_weight=-1.0), "self_model_weight"),
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
        train(modules.build_module(mlp(64, 8, 7)), xtr, ytr, xte, yte, base_config())


def _train_digits(digits, seed):
    xtr, ytr, xte, yte = digits
    config = base_config(epochs=10, seed=seed, checkpoints=5)
    module = modules.build_module(mlp(64, 32, 10), seed=seed)
    progress, saved = [], []
    result = train(
        module, xtr, ytr, xte, yte, config,
        on_progress=lambda step, total, m: progress.append((step, total, m)),
        on_checkpoint=lambda step, weights, state: saved.append((step, weights)),
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
    assert set(progress[-1][2]) == {"loss", "accuracy", "epoch", "lr", "steps_per_second"}
    assert progress[-1][2]["epoch"] == pytest.approx(10.0)
    # Checkpoints: at checkpoint_steps, detached copies, the last one equal to the result.
    assert [s for s, _ in saved] == checkpoint_steps(result.steps, 5) == result.checkpoint_steps
    for name, tensor in module.state_dict().items():
        assert torch.equal(saved[-1][1][name], tensor)
        assert saved[-1][1][name].data_ptr() != tensor.data_ptr()
        assert not torch.equal(saved[0][1][name], tensor)

    module2, result2, progress2, _ = _train_digits(digits, seed=0)
    assert result2.metrics == result.metrics
    def scores(reports):  # everything but the (timing-dependent) step rate
        return [{k: v for k, v in p[2].items() if k != "steps_per_second"} for p in reports]

    assert scores(progress2) == scores(progress)
    for name, tensor in module.state_dict().items():
        assert torch.equal(module2.state_dict()[name], tensor)


def test_training_adam_and_mse_on_labels(digits):
    xtr, ytr, xte, yte = digits
    module = modules.build_module(mlp(64, 32, 10), seed=0)
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
    module = modules.build_module(mlp(64, 32, 10), seed=0)
    with torch.no_grad():
        module.layers[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        train(module, xtr, ytr, xte, yte, base_config())
