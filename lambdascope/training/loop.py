"""The training loop: a seeded, plain-PyTorch minibatch loop with the techniques.

No service plumbing here: `train` takes tensors and a config and reports through callbacks.
An exception raised by a callback propagates out of `train` (that is how a job is cancelled).

One step, in order: noise.perturb (Anti-PGD evaluates the gradient at z + ξ_t) → forward with
the routing masks applied and the needed sites captured → objective = task loss
(+ self-model MSE) (+ activation penalties) → backward → noise.restore → optimizer step at the
scheduled rate → noise.after_step. A run can stop after any checkpoint and continue from its
`TrainState` to exactly the weights an uninterrupted run reaches (on CPU).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lambdascope.llc.losses import LABEL_LOSSES
from lambdascope.training import penalties as penalty_core
from lambdascope.training import routing as routing_core
from lambdascope.training.anti_pgd import DISTRIBUTIONS, KINDS, NoiseInjection
from lambdascope.training.self_modeling import TASK_LOSSES, compute_task_loss, self_modeling_loss
from lambdascope.training.sites import capture, intercept

OPTIMIZERS = ("sgd", "adam")
LOSSES = tuple(TASK_LOSSES)
SCHEDULES = ("constant", "cosine", "step")
# How many times per run `on_progress` is called (plus once at the end).
PROGRESS_REPORTS = 100
_EVAL_BATCH = 8192
# Integer inputs an embedding takes as token ids.
_TOKEN_DTYPES = (torch.int64, torch.int32)


@dataclass(frozen=True, kw_only=True)
class NoiseConfig:
    kind: str  # "pgd" | "anti_pgd"
    sigma: float
    distribution: str = "gaussian"
    stop_step: int = 0  # first step without noise; 0 = never stops


@dataclass(frozen=True, kw_only=True)
class Schedule:
    kind: str = "constant"
    warmup_steps: int = 0
    step_every: int = 0  # "step" only; counted after the warmup
    gamma: float = 1.0  # "step" only

    def factor(self, step: int, total: int) -> float:
        """Multiplier of the base rate at 1-based `step` of `total`."""
        if self.warmup_steps and step <= self.warmup_steps:
            return step / self.warmup_steps
        if self.kind == "cosine":
            span = max(total - self.warmup_steps, 1)
            return 0.5 * (1 + math.cos(math.pi * (step - 1 - self.warmup_steps) / span))
        if self.kind == "step":
            return self.gamma ** ((step - 1 - self.warmup_steps) // self.step_every)
        return 1.0


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    batch_size: int
    lr: float
    optimizer: str  # "sgd" | "adam"
    loss: str  # a name in lambdascope.llc.losses.LOSSES
    task_outputs: int  # outputs the task loss sees (classes); self-model outputs follow them
    epochs: int = 0  # exactly one of epochs and steps is positive
    steps: int = 0
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only, needs momentum > 0
    weight_decay: float = 0.0
    seed: int = 0
    self_model_site: str = ""  # site whose activations are modelled; "" = off
    self_model_weight: float = 0.0
    penalties: tuple[penalty_core.CompiledPenalty, ...] = ()
    routing: tuple[routing_core.CompiledRule, ...] = ()
    noise: NoiseConfig | None = None
    schedule: Schedule = field(default_factory=Schedule)
    reconstruct: bool = False  # autoencoder: the target is the input; y only labels examples
    checkpoints: int = 1  # log-spaced checkpoint steps; the final step is always one
    checkpoint_at: tuple[int, ...] = ()  # explicit checkpoint steps instead of `checkpoints`

    @property
    def self_modeling(self) -> bool:
        return bool(self.self_model_site)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""

        def finite(name: str, value: float) -> None:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")

        if (self.epochs > 0) == (self.steps > 0) or self.epochs < 0 or self.steps < 0:
            raise ValueError(f"exactly one of epochs and steps must be positive, got "
                             f"epochs={self.epochs}, steps={self.steps}")
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
        finite("self_model_weight", self.self_model_weight)
        if self.self_model_weight < 0:
            raise ValueError(f"self_model_weight must be non-negative, got {self.self_model_weight}")
        if not self.self_modeling and self.self_model_weight != 0.0:
            raise ValueError("self_model_weight is set but self-modeling is off (no site)")
        if self.self_modeling and self.reconstruct:
            raise ValueError("self-modeling does not apply to a reconstruction (autoencoder) task")
        if self.noise is not None:
            _validate_noise(self.noise)
        _validate_schedule(self.schedule)
        if self.checkpoints < 1:
            raise ValueError(f"checkpoints must be at least 1, got {self.checkpoints}")
        if any(s < 1 for s in self.checkpoint_at):
            raise ValueError(f"checkpoint steps must be at least 1, got {list(self.checkpoint_at)}")


def _validate_noise(noise: NoiseConfig) -> None:
    if noise.kind not in KINDS:
        raise ValueError(f"noise.kind must be one of {KINDS}, got {noise.kind!r}")
    if noise.distribution not in DISTRIBUTIONS:
        raise ValueError(f"noise.distribution must be one of {DISTRIBUTIONS}, "
                         f"got {noise.distribution!r}")
    if not math.isfinite(noise.sigma) or noise.sigma < 0:
        raise ValueError(f"noise.sigma must be a non-negative number, got {noise.sigma}")
    if noise.stop_step < 0:
        raise ValueError(f"noise.stop_step must be non-negative (0 = never), got {noise.stop_step}")


def _validate_schedule(schedule: Schedule) -> None:
    if schedule.kind not in SCHEDULES:
        raise ValueError(f"schedule.kind must be one of {SCHEDULES}, got {schedule.kind!r}")
    if schedule.warmup_steps < 0:
        raise ValueError(f"schedule.warmup_steps must be non-negative, got {schedule.warmup_steps}")
    if schedule.kind == "step":
        if schedule.step_every < 1:
            raise ValueError(f"schedule.step_every must be at least 1 for a step schedule, "
                             f"got {schedule.step_every}")
        if not math.isfinite(schedule.gamma) or not 0 < schedule.gamma <= 1:
            raise ValueError(f"schedule.gamma must be in (0, 1], got {schedule.gamma}")


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where a checkpoint left it."""

    step: int
    module: dict[str, torch.Tensor]
    optimizer: dict
    noise: dict[str, torch.Tensor] | None
    epoch: int  # epoch of the next step
    batch: int  # batch index of the next step within that epoch
    epoch_generator: torch.Tensor  # shuffling generator's state at the start of `epoch`


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


def total_steps(config: TrainConfig, n: int) -> int:
    return config.steps or config.epochs * math.ceil(n / min(config.batch_size, n))


def planned_checkpoints(config: TrainConfig, total: int) -> list[int]:
    if config.checkpoint_at:
        explicit = {s for s in config.checkpoint_at if s <= total}
        return sorted(explicit | {total})
    return checkpoint_steps(total, config.checkpoints)


def is_classification(config: TrainConfig, y: torch.Tensor) -> bool:
    """A label loss (cross-entropy), or a regression loss on integer labels (one-hot targets):
    accuracy is reported."""
    return not config.reconstruct and (config.loss in LABEL_LOSSES or not y.is_floating_point())


def train(
    module: torch.nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    config: TrainConfig,
    *,
    rows_train: torch.Tensor | None = None,
    resume: TrainState | None = None,
    on_progress: Callable[[int, int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[int, dict[str, torch.Tensor], TrainState], None] | None = None,
) -> TrainResult:
    """Train `module` in place with minibatches reshuffled each epoch by a generator seeded
    with config.seed. Deterministic on CPU given the module's initial weights.

    rows_train: each training example's row in the data as given (for routing by rows);
    defaults to 0..n-1. resume: continue from a checkpoint's state instead of step 0.
    on_progress(step, total_steps, metrics) is called about PROGRESS_REPORTS times and at
    the final step; metrics are means since the previous report: loss (the objective),
    accuracy (classification), task_loss and self_model_loss (self-modeling), penalty,
    epoch, lr and steps_per_second. on_checkpoint(step, weights, state) gets detached CPU
    copies at each planned checkpoint step."""
    config.validate()
    _check_data(module, x_train, y_train, "train", config)
    if len(x_test):
        _check_data(module, x_test, y_test, "test", config)
    classification = is_classification(config, y_train)
    device = next(module.parameters()).device
    n = len(x_train)
    rows = torch.arange(n) if rows_train is None else rows_train
    batch_size = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    total = total_steps(config, n)
    saves = planned_checkpoints(config, total)
    save_set = set(saves)
    report_every = math.ceil(total / PROGRESS_REPORTS)

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, config)
    noise = None
    if config.noise is not None and config.noise.sigma > 0:
        noise = NoiseInjection(params, kind=config.noise.kind, sigma=config.noise.sigma,
                               distribution=config.noise.distribution,
                               stop_step=config.noise.stop_step,
                               seed=(config.seed + 1) % 2**64)  # not the shuffling stream
    generator = torch.Generator().manual_seed(config.seed)
    step, epoch, first_batch = 0, 0, 0
    if resume is not None:
        _restore(module, optimizer, noise, resume)
        step, epoch, first_batch = resume.step, resume.epoch, resume.batch
        generator.set_state(resume.epoch_generator)

    start = time.perf_counter()
    module.train()
    acc = _Accumulator(config, classification)
    last_report = (step, time.perf_counter())
    while step < total:
        epoch_state = generator.get_state()
        order = torch.randperm(n, generator=generator)
        for b in range(first_batch, steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            step += 1
            rate = config.lr * config.schedule.factor(step, total)
            for group in optimizer.param_groups:
                group["lr"] = rate
            if noise is not None:
                noise.perturb(step)
            losses = _losses(module, x_train[idx].to(device), y_train[idx].to(device),
                             rows[idx], config)
            optimizer.zero_grad(set_to_none=True)
            losses.objective.backward()
            if noise is not None:
                noise.restore()
            optimizer.step()
            if noise is not None:
                noise.after_step(step)
            acc.add(losses, y_train[idx].to(device))
            if step % report_every == 0 or step == total:
                metrics = acc.flush()
                now = time.perf_counter()
                metrics.update(epoch=epoch + (b + 1) / steps_per_epoch, lr=rate,
                               steps_per_second=(step - last_report[0]) / max(now - last_report[1], 1e-9))
                last_report = (step, now)
                _check_finite(metrics["loss"], step)
                if on_progress is not None:
                    on_progress(step, total, metrics)
            if step in save_set and on_checkpoint is not None:
                _check_finite(float(losses.objective.detach()), step)
                next_epoch, next_batch = (epoch, b + 1) if b + 1 < steps_per_epoch else (epoch + 1, 0)
                state = TrainState(
                    step=step, module=_state_copy(module),
                    optimizer=copy.deepcopy(optimizer.state_dict()),
                    noise=noise.state_dict() if noise is not None else None,
                    epoch=next_epoch, batch=next_batch,
                    epoch_generator=epoch_state if next_batch else generator.get_state())
                on_checkpoint(step, _state_copy(module), state)
            if step == total:
                break
        epoch, first_batch = epoch + 1, 0

    metrics = _prefixed(evaluate(module, x_train, y_train, config), "train_")
    if len(x_test):
        metrics.update(_prefixed(evaluate(module, x_test, y_test, config), "test_"))
    return TrainResult(metrics=metrics, steps=total, seconds=time.perf_counter() - start,
                       checkpoint_steps=saves)


@torch.no_grad()
def evaluate(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig
) -> dict[str, float]:
    """loss (task loss only), accuracy (classification), self_model_loss (self-modeling) and
    penalty over the whole set, in eval mode, without routing; the module's mode is restored."""
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    acc = _Accumulator(config, is_classification(config, y))
    rows = torch.arange(len(x))
    try:
        for i in range(0, len(x), _EVAL_BATCH):
            xb, yb = x[i : i + _EVAL_BATCH].to(device), y[i : i + _EVAL_BATCH].to(device)
            acc.add(_losses(module, xb, yb, rows[i : i + _EVAL_BATCH], config, route=False),
                    yb, weight=len(xb))
    finally:
        module.train(was_training)
    out = acc.flush()
    out["loss"] = out.pop("task_loss", out["loss"])  # the task loss, comparable across runs
    return out


# --------------------------------------------------------------------------------------


@dataclass
class _Losses:
    objective: torch.Tensor  # what is backpropagated
    task: torch.Tensor
    self_model: torch.Tensor | None
    penalty: torch.Tensor | None
    outputs: torch.Tensor  # task outputs, for accuracy


def _losses(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
            config: TrainConfig, *, route: bool = True) -> _Losses:
    target = x if config.reconstruct else y
    transforms = {}
    if route and config.routing:
        labels = None if y.is_floating_point() else y
        transforms = routing_core.routing_transforms(config.routing, labels, rows.to(x.device))
    watched = sorted({p.site for p in config.penalties}
                     | ({config.self_model_site} if config.self_modeling else set()))
    with intercept(module, transforms), capture(module, watched) as seen:
        outputs = module(x)
    penalty = penalty_core.total_penalty(config.penalties, seen) if config.penalties else None
    if config.self_modeling:
        r = self_modeling_loss(outputs, seen[config.self_model_site], target,
                               config.task_outputs, config.self_model_weight, config.loss)
        objective, task, self_model, task_out = r.total, r.task, r.self_model, r.task_outputs
    else:
        task = compute_task_loss(outputs, target, config.loss)
        objective, self_model, task_out = task, None, outputs
    if penalty is not None:
        objective = objective + penalty
    return _Losses(objective, task, self_model, penalty, task_out)


class _Accumulator:
    """Sample-weighted running means, kept as tensors to avoid a sync per step."""

    def __init__(self, config: TrainConfig, classification: bool):
        self.config = config
        self.classification = classification
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.sums: dict[str, torch.Tensor | float] = {}

    def add(self, losses: _Losses, y: torch.Tensor, weight: int | None = None) -> None:
        w = len(y) if weight is None else weight
        values = {"loss": losses.objective.detach() * w}
        if losses.self_model is not None or losses.penalty is not None:
            values["task_loss"] = losses.task.detach() * w
        if losses.self_model is not None:
            values["self_model_loss"] = losses.self_model.detach() * w
        if losses.penalty is not None:
            values["penalty"] = losses.penalty.detach() * w
        if self.classification:
            values["accuracy"] = (losses.outputs.detach().argmax(dim=1) == y).sum()
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += w

    def flush(self) -> dict[str, float]:
        count = max(self.count, 1)
        out = {k: float(v) / count for k, v in self.sums.items()}
        self._reset()
        return out


def _make_optimizer(params: list[torch.Tensor], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _restore(module: torch.nn.Module, optimizer: torch.optim.Optimizer,
             noise: NoiseInjection | None, state: TrainState) -> None:
    module.load_state_dict(state.module)
    optimizer.load_state_dict(state.optimizer)
    if (noise is None) != (state.noise is None):
        raise ValueError("the saved training state does not match the config's noise injection")
    if noise is not None:
        noise.load_state_dict(state.noise)


def _check_data(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, split: str, config: TrainConfig
) -> None:
    if len(x) != len(y):
        raise ValueError(f"{split} set: x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{split} set is empty")
    if not x.is_floating_point():
        if x.dtype not in _TOKEN_DTYPES:
            raise ValueError(f"{split} set: x must be floating point, or int64/int32 token ids; "
                             f"got {x.dtype}")
        if int(x.min()) < 0:
            raise ValueError(f"{split} set: token ids in x must be non-negative, found "
                             f"{int(x.min())}")
    if config.reconstruct:
        pass  # the target is x itself; y only labels the examples (routing, evaluation)
    elif y.is_floating_point():
        if config.loss in LABEL_LOSSES:
            raise ValueError(f"{split} set: {config.loss} needs int64 labels, got {y.dtype}")
        allowed = [(config.task_outputs,)] + ([()] if config.task_outputs == 1 else [])
        if tuple(y.shape[1:]) not in allowed:
            raise ValueError(
                f"{split} set: {config.loss} targets must have shape [n, {config.task_outputs}], "
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
    # One row through the module: catches inputs and outputs that do not fit the config.
    device = next(module.parameters()).device
    watched = [config.self_model_site] if config.self_modeling else []
    try:
        with torch.no_grad(), capture(module, watched) as seen:
            outputs = module(x[:1].to(device))
    except (RuntimeError, IndexError) as exc:  # IndexError: a token id beyond the vocabulary
        raise ValueError(f"{split} set: x with shape {list(x.shape)} does not fit the model: "
                         f"{exc}") from None
    expected = x[0].numel() if config.reconstruct else config.task_outputs
    what = "the input width (reconstruction)" if config.reconstruct else f"task_outputs {expected}"
    if config.self_modeling:
        width = seen[config.self_model_site][0].numel()
        expected += width
        what += f" + {width} units of {config.self_model_site} (self-modeling)"
    if outputs.ndim != 2 or outputs.shape[1] != expected:
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
