"""The trainer's core: a seeded, plain-PyTorch minibatch training loop.

No service plumbing here: `train` takes tensors and a config and reports through callbacks.
An exception raised by a callback propagates out of `train` (that is how a job is cancelled).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from services.trainer.self_modeling import compute_task_loss, self_modeling_loss

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("cross_entropy", "mse")
# How many times per run `on_progress` is called (plus once at the end).
PROGRESS_REPORTS = 100
_EVAL_BATCH = 8192


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    optimizer: str  # "sgd" | "adam"
    loss: str  # "cross_entropy" | "mse"
    task_outputs: int  # outputs the task loss sees (classes); self-model outputs follow them
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only, needs momentum > 0
    weight_decay: float = 0.0
    seed: int = 0
    self_model_layer: int = 0  # hidden layer whose activations are modelled; 0 = off
    self_model_weight: float = 0.0
    checkpoints: int = 1  # log-spaced checkpoint steps; the final step is always one

    @property
    def self_modeling(self) -> bool:
        return self.self_model_layer > 0

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""

        def finite(name: str, value: float) -> None:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")

        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        finite("lr", self.lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.task_outputs < 1:
            raise ValueError(f"task_outputs must be at least 1, got {self.task_outputs}")
        finite("momentum", self.momentum)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.optimizer != "sgd" and (self.momentum != 0.0 or self.nesterov):
            raise ValueError(
                f"momentum and nesterov apply to optimizer 'sgd' only, not {self.optimizer!r}"
            )
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov needs momentum > 0")
        finite("weight_decay", self.weight_decay)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if self.self_model_layer < 0:
            raise ValueError(
                f"self_model_layer must be non-negative (0 = off), got {self.self_model_layer}"
            )
        finite("self_model_weight", self.self_model_weight)
        if self.self_model_weight < 0:
            raise ValueError(
                f"self_model_weight must be non-negative, got {self.self_model_weight}"
            )
        if self.self_model_layer == 0 and self.self_model_weight != 0.0:
            raise ValueError("self_model_weight is set but self_model_layer is 0 (off)")
        if self.checkpoints < 1:
            raise ValueError(f"checkpoints must be at least 1, got {self.checkpoints}")


@dataclass
class TrainResult:
    # train_loss, test_loss (task loss only), train_accuracy, test_accuracy (classification),
    # train_self_model_loss, test_self_model_loss (self-modeling); test_* absent without a
    # test set.
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    checkpoint_steps: list[int] = field(default_factory=list)


def checkpoint_steps(total_steps: int, count: int) -> list[int]:
    """`min(count, total_steps)` distinct steps in [1, total_steps], log-spaced, ascending,
    always including total_steps (and step 1 when count >= 2)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    count = min(count, total_steps)
    if count == 1:
        return [total_steps]
    steps: list[int] = []
    for i in range(count):
        target = round(total_steps ** (i / (count - 1)))
        # Distinct and increasing, leaving room for the remaining steps.
        low = steps[-1] + 1 if steps else 1
        high = total_steps - (count - 1 - i)
        steps.append(min(max(target, low), high))
    return steps


def is_classification(config: TrainConfig, y: torch.Tensor) -> bool:
    """Cross-entropy, or MSE on integer labels (one-hot targets): accuracy is reported."""
    return config.loss == "cross_entropy" or not y.is_floating_point()


def train(
    module: torch.nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    config: TrainConfig,
    *,
    on_progress: Callable[[int, int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> TrainResult:
    """Train `module` in place with minibatches reshuffled each epoch by a generator seeded
    with config.seed. Deterministic on CPU given the module's initial weights.

    on_progress(step, total_steps, metrics) is called about PROGRESS_REPORTS times and at
    the final step; metrics are means since the previous report: loss (the objective),
    accuracy (classification), task_loss and self_model_loss (self-modeling), and epoch.
    on_checkpoint(step, state) gets a detached CPU copy of the state dict at each of
    checkpoint_steps(total_steps, config.checkpoints)."""
    config.validate()
    _check_data(module, x_train, y_train, "train", config)
    if len(x_test):
        _check_data(module, x_test, y_test, "test", config)
    classification = is_classification(config, y_train)
    device = next(module.parameters()).device

    optimizer = _make_optimizer(module, config)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    saves = checkpoint_steps(total_steps, config.checkpoints)
    save_set = set(saves)
    report_every = math.ceil(total_steps / PROGRESS_REPORTS)
    generator = torch.Generator().manual_seed(config.seed)

    start = time.perf_counter()
    module.train()
    step = 0
    acc = _Accumulator(config.self_modeling, classification)
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            xb = x_train[idx].to(device)
            yb = y_train[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            losses = _losses(module, xb, yb, config)
            losses[0].backward()
            optimizer.step()
            step += 1
            acc.add(losses, yb)
            if step % report_every == 0 or step == total_steps:
                metrics = acc.flush()
                metrics["epoch"] = epoch + (b + 1) / steps_per_epoch
                _check_finite(metrics["loss"], step)
                if on_progress is not None:
                    on_progress(step, total_steps, metrics)
            if step in save_set and on_checkpoint is not None:
                _check_finite(float(losses[0].detach()), step)
                on_checkpoint(step, _state_copy(module))

    metrics = _prefixed(evaluate(module, x_train, y_train, config), "train_")
    if len(x_test):
        metrics.update(_prefixed(evaluate(module, x_test, y_test, config), "test_"))
    return TrainResult(
        metrics=metrics,
        steps=total_steps,
        seconds=time.perf_counter() - start,
        checkpoint_steps=saves,
    )


@torch.no_grad()
def evaluate(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig
) -> dict[str, float]:
    """loss (task loss only), accuracy (classification) and self_model_loss (self-modeling)
    over the whole set, in eval mode; the module's mode is restored afterwards."""
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    acc = _Accumulator(config.self_modeling, is_classification(config, y))
    try:
        for i in range(0, len(x), _EVAL_BATCH):
            xb, yb = x[i : i + _EVAL_BATCH].to(device), y[i : i + _EVAL_BATCH].to(device)
            acc.add(_losses(module, xb, yb, config), yb, weight=len(xb))
    finally:
        module.train(was_training)
    out = acc.flush()
    if config.self_modeling:
        out["loss"] = out.pop("task_loss")  # report the task loss, comparable across runs
    return out


# --------------------------------------------------------------------------------------


def _losses(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(objective, task loss, self-model MSE or None, task outputs)."""
    if config.self_modeling:
        r = self_modeling_loss(
            module,
            x,
            y,
            config.task_outputs,
            config.self_model_layer,
            config.self_model_weight,
            task_loss=config.loss,
        )
        return r.total, r.task, r.self_model, r.task_outputs
    outputs = module(x)
    task = compute_task_loss(outputs, y, config.loss)
    return task, task, None, outputs


class _Accumulator:
    """Sample-weighted running means, kept as tensors to avoid a sync per step."""

    def __init__(self, self_modeling: bool, classification: bool):
        self.self_modeling = self_modeling
        self.classification = classification
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.sums: dict[str, torch.Tensor | float] = {}

    def add(self, losses, y: torch.Tensor, weight: int | None = None) -> None:
        total, task, self_model, outputs = losses
        w = len(y) if weight is None else weight
        values = {"loss": total.detach() * w}
        if self.self_modeling:
            values["task_loss"] = task.detach() * w
            values["self_model_loss"] = self_model.detach() * w
        if self.classification:
            values["accuracy"] = (outputs.detach().argmax(dim=1) == y).sum()
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += w

    def flush(self) -> dict[str, float]:
        count = max(self.count, 1)
        out = {k: float(v) / count for k, v in self.sums.items()}
        self._reset()
        return out


def _make_optimizer(module: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _check_data(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, split: str, config: TrainConfig
) -> None:
    if len(x) != len(y):
        raise ValueError(f"{split} set: x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{split} set is empty")
    if not x.is_floating_point():
        raise ValueError(f"{split} set: x must be floating point, got {x.dtype}")
    if y.is_floating_point():
        if config.loss == "cross_entropy":
            raise ValueError(f"{split} set: cross_entropy needs int64 labels, got {y.dtype}")
        allowed = [(config.task_outputs,)] + ([()] if config.task_outputs == 1 else [])
        if tuple(y.shape[1:]) not in allowed:
            raise ValueError(
                f"{split} set: mse targets must have shape [n, {config.task_outputs}], "
                f"got {list(y.shape)}"
            )
    else:
        if y.ndim != 1:
            raise ValueError(f"{split} set: labels must be 1-D, got shape {list(y.shape)}")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= config.task_outputs:
            raise ValueError(
                f"{split} set: labels must be in 0..{config.task_outputs - 1} "
                f"(task_outputs), found {low}..{high}"
            )
    # One row through the module: catches an output width that does not fit the config.
    with torch.no_grad():
        device = next(module.parameters()).device
        if config.self_modeling:
            try:
                outputs, hidden = module.forward_with_hidden(
                    x[:1].to(device), config.self_model_layer
                )
            except AttributeError:
                raise ValueError(
                    "self_model_layer needs a built-in MLP module (forward_with_hidden)"
                ) from None
            except ValueError as e:
                raise ValueError(f"self_model_layer: {e}") from None
            expected = config.task_outputs + hidden.shape[1]
        else:
            outputs = module(x[:1].to(device))
            expected = config.task_outputs
    if outputs.ndim != 2 or outputs.shape[1] != expected:
        what = (
            f"task_outputs {config.task_outputs} + hidden layer {config.self_model_layer} "
            f"width {expected - config.task_outputs}"
            if config.self_modeling
            else f"task_outputs {config.task_outputs}"
        )
        raise ValueError(
            f"the module has {list(outputs.shape[1:])} outputs per example; "
            f"the config needs {expected} ({what})"
        )


def _state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {prefix + k: v for k, v in metrics.items()}


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(f"training diverged: loss is {loss} at step {step}")
