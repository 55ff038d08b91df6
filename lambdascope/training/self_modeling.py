"""Self-modeling (Premakumar et al. 2024, arXiv 2407.10188).

The network also predicts its own hidden activations: the final layer is widened from
`task_outputs` to `task_outputs + dim(h)` outputs, where h are the activations of a chosen
hidden layer (after its activation function). The extra outputs regress on h.detach():

    loss = task_loss(outputs[:, :task_outputs], y)
           + weight * MSE(outputs[:, task_outputs:], h.detach())

The target is detached, so gradient reaches the network only through the prediction head
(and through h's own effect on the outputs), never by pulling h towards the prediction.
Task metrics and audits use `outputs[:, :task_outputs]` only: checkpoints record
`task_outputs`, and the estimator audits the task network (the output layer's self-model rows
removed, `lambdascope.modules.narrow_weights`), the parameters the task loss depends on.

Here are the objective and the task loss on tensors. The widened network itself (an
`Architecture` message with the wider output layer, its task network and the paired initial
weights) is built by the trainer service (services/trainer/translate.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lambdascope.llc.losses import LABEL_LOSSES, LOSSES, LossFn


class SelfModelingLoss(NamedTuple):
    total: torch.Tensor  # task + weight * self_model: what is backpropagated
    task: torch.Tensor  # the task loss alone
    self_model: torch.Tensor  # the unweighted MSE of the self-model outputs
    task_outputs: torch.Tensor  # outputs[:, :task_outputs], for metrics


def self_modeling_loss(
    outputs: torch.Tensor,
    hidden: torch.Tensor,
    target: torch.Tensor,
    task_outputs: int,
    weight: float,
    task_loss: str = "cross_entropy",
) -> SelfModelingLoss:
    """The self-modeling objective on one batch, from the module's outputs and the activations
    `hidden` it produced at the modelled layer (captured in the same forward pass)."""
    hidden = hidden.flatten(1)
    expected = task_outputs + hidden.shape[1]
    if outputs.shape[1] != expected:
        raise ValueError(
            f"self-modeling needs {task_outputs} task outputs + {hidden.shape[1]} hidden units "
            f"= {expected} outputs, the module has {outputs.shape[1]}"
        )
    task_out = outputs[:, :task_outputs]
    task = compute_task_loss(task_out, target, task_loss)
    self_model = F.mse_loss(outputs[:, task_outputs:], hidden.detach())
    return SelfModelingLoss(task + weight * self_model, task, self_model, task_out)


def _regression(loss: LossFn) -> LossFn:
    """``loss`` against float targets, int labels one-hot encoded first."""
    return lambda outputs, y: loss(outputs, mse_targets(y, outputs.shape[1]).to(outputs.dtype))


# The task losses training offers: the library's loss table (lambdascope.llc.losses), each the
# mean over the batch; a label loss on int labels, the others on float targets (int labels
# one-hot encoded).
TASK_LOSSES = {name: loss if name in LABEL_LOSSES else _regression(loss) for name, loss in LOSSES.items()}


def compute_task_loss(outputs: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean task loss of kind ``kind`` (a name in TASK_LOSSES)."""
    if kind not in TASK_LOSSES:
        raise ValueError(f"loss must be one of {sorted(TASK_LOSSES)}, got {kind!r}")
    return TASK_LOSSES[kind](outputs, y)


def mse_targets(y: torch.Tensor, outputs: int) -> torch.Tensor:
    if not y.is_floating_point():
        return F.one_hot(y, outputs)
    if y.ndim == 1 and outputs == 1:
        return y.unsqueeze(1)
    return y
