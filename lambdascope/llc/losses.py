"""The loss functions by name, each the MEAN loss over a batch (what the LLC estimator needs):
the one table of loss names in the libraries (the audit's worker, the SDK, and training through
lambdascope.training.self_modeling.TASK_LOSSES); a test holds it to the API's LossKind.

Cross-entropy is token-level: outputs shaped [batch, ..., classes] and integer targets
[batch, ...] are flattened, so a sequence model's loss is the mean over every position of every
example (a classifier's [batch, classes] / [batch] is the ordinary case). nβ still counts
examples (sequences), n / log n with n the number of rows of the dataset.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: [batch, ..., C] logits, [batch, ...] labels."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


LOSSES: dict[str, LossFn] = {"mse": F.mse_loss, "mae": F.l1_loss, "cross_entropy": cross_entropy}
LABEL_LOSSES = frozenset({"cross_entropy"})  # those whose targets are class labels (ints)


def describe(name: str, y_shape: tuple[int, ...]) -> str:
    """How the loss is taken over this dataset's targets, in one sentence for the report."""
    positions = 1
    for d in y_shape[1:]:
        positions *= d
    if name == "cross_entropy" and len(y_shape) > 1:
        return (f"token-level cross-entropy: the mean over all {positions} positions of each example "
                f"(targets shaped {list(y_shape)}); n counts examples")
    if name == "cross_entropy":
        return "cross-entropy over class labels, mean over the batch"
    return f"{name}: the mean over the batch and all {positions} target entries per example"
