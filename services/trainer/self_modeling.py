"""Self-modeling (Premakumar et al. 2024, arXiv 2407.10188).

The network also predicts its own hidden activations: the final layer is widened from
`task_outputs` to `task_outputs + dim(h)` outputs, where h are the activations of a chosen
hidden layer (after its activation function). The extra outputs regress on h.detach():

    loss = task_loss(outputs[:, :task_outputs], y)
           + weight * MSE(outputs[:, task_outputs:], h.detach())

The target is detached, so gradient reaches the network only through the prediction head
(and through h's own effect on the outputs), never by pulling h towards the prediction.
Task metrics and audits use `outputs[:, :task_outputs]` only (`task_outputs_of`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lambdascope import architectures
from lambdascope.v1 import models_pb2


def check_layer(arch: models_pb2.Architecture, layer: int) -> None:
    """ValueError naming `self_modeling.layer` unless `layer` is a hidden layer of `arch`."""
    hidden = architectures.hidden_dims(arch)
    if not hidden:
        raise ValueError(
            "self_modeling.layer: the architecture has no hidden layer to model "
            f"(widths {list(arch.mlp.widths)})"
        )
    if not 1 <= layer <= len(hidden):
        raise ValueError(
            f"self_modeling.layer must be in 1..{len(hidden)} for this architecture, got {layer}"
        )


def self_modeling_architecture(
    arch: models_pb2.Architecture, layer: int
) -> models_pb2.Architecture:
    """A copy of `arch` whose output layer is widened by the width of hidden layer `layer`."""
    architectures.validate_architecture(arch)
    kind = architectures.architecture_kind(arch)
    if kind != "mlp":
        raise ValueError(f"self-modeling supports architecture.mlp only, got architecture.{kind}")
    check_layer(arch, layer)
    widened = models_pb2.Architecture()
    widened.CopyFrom(arch)
    widened.mlp.widths[-1] += architectures.hidden_dims(arch)[layer - 1]
    return widened


def task_architecture(arch: models_pb2.Architecture, task_outputs: int) -> models_pb2.Architecture:
    """Inverse of `self_modeling_architecture`: the output layer cut to `task_outputs`."""
    architectures.validate_architecture(arch)
    if architectures.architecture_kind(arch) != "mlp":
        raise ValueError("self-modeling supports architecture.mlp only")
    if not 1 <= task_outputs <= arch.mlp.widths[-1]:
        raise ValueError(
            f"task_outputs must be in 1..{arch.mlp.widths[-1]}, got {task_outputs}"
        )
    cut = models_pb2.Architecture()
    cut.CopyFrom(arch)
    cut.mlp.widths[-1] = task_outputs
    return cut


def task_state_dict(
    state: dict[str, torch.Tensor], arch: models_pb2.Architecture, task_outputs: int
) -> dict[str, torch.Tensor]:
    """Weights of a self-modeling MLP with the self-model rows of the last layer removed,
    matching `task_architecture(arch, task_outputs)` (what the LLC audit should see)."""
    last = len(arch.mlp.widths) - 2
    out = dict(state)
    for suffix in ("weight", "bias"):
        name = f"layers.{last}.{suffix}"
        if name in out:
            out[name] = out[name][:task_outputs].clone()
    return out


class SelfModelingLoss(NamedTuple):
    total: torch.Tensor  # task + weight * self_model: what is backpropagated
    task: torch.Tensor  # the task loss alone
    self_model: torch.Tensor  # the unweighted MSE of the self-model outputs
    task_outputs: torch.Tensor  # outputs[:, :task_outputs], for metrics


def forward_self_model(
    module: torch.nn.Module, x: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, h) for an MLP from `architectures.build_module`; h is not detached."""
    forward_with_hidden = getattr(module, "forward_with_hidden", None)
    if forward_with_hidden is None:
        raise TypeError(
            f"self-modeling needs a built-in MLP (forward_with_hidden), got {type(module).__name__}"
        )
    return forward_with_hidden(x, layer)


def self_modeling_loss(
    module: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    layer: int,
    weight: float,
    task_loss: str = "cross_entropy",
) -> SelfModelingLoss:
    """The self-modeling objective on one batch.

    `num_classes` is the number of task outputs; the module must have
    num_classes + dim(h) outputs. `task_loss` is "cross_entropy" (y: int64 labels) or
    "mse" (y: float targets shaped like the task outputs, or int64 labels -> one-hot)."""
    outputs, hidden = forward_self_model(module, x, layer)
    expected = num_classes + hidden.shape[1]
    if outputs.shape[1] != expected:
        raise ValueError(
            f"self-modeling layer {layer} needs {num_classes} + {hidden.shape[1]} = {expected} "
            f"outputs, the module has {outputs.shape[1]}"
        )
    task_out = outputs[:, :num_classes]
    prediction = outputs[:, num_classes:]
    task = compute_task_loss(task_out, y, task_loss)
    self_model = F.mse_loss(prediction, hidden.detach())
    return SelfModelingLoss(task + weight * self_model, task, self_model, task_out)


def compute_task_loss(outputs: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean task loss: "cross_entropy" on int labels, "mse" on float targets (int labels
    are one-hot encoded)."""
    if kind == "cross_entropy":
        return F.cross_entropy(outputs, y)
    if kind == "mse":
        return F.mse_loss(outputs, mse_targets(y, outputs.shape[1]).to(outputs.dtype))
    raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {kind!r}")


def mse_targets(y: torch.Tensor, outputs: int) -> torch.Tensor:
    if not y.is_floating_point():
        return F.one_hot(y, outputs)
    if y.ndim == 1 and outputs == 1:
        return y.unsqueeze(1)
    return y
