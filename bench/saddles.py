"""A training run whose developmental stages theory gives exactly: a deep linear network learning
a teacher one singular value at a time (saddle-to-saddle dynamics), shared by bench/stages.py and
its fast version in tests/unit/test_stages_saddles.py.

From a small initialization, gradient descent on a DLN whose teacher has well-separated singular
values s_1 > s_2 > ... picks the modes up one at a time (Saxe et al. 2014; Jacot et al. 2021): the
loss sits on a plateau while the end-to-end matrix has rank r, drops when mode r+1 is learned,
and sits on the next plateau. Audited with the model's own outputs as targets (AuditConfig
.model_targets: every checkpoint is then a minimum of its own loss), a checkpoint on the rank-r
plateau is a DLN of rank r, whose learning coefficient Aoyagi's formula gives
(lambdascope.llc.theory). So λ̂ over training must step through λ(r = 0), λ(1), ... λ(R), and
stage detection must find one flat stage per plateau, rising between them.

The widths (20, 4, 4, 20) make consecutive ranks far apart (λ = 8, 24, 40, 56 for r = 0..3), so a
plateau cannot be mistaken for its neighbour within the 10% the check allows.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lambdascope.llc.audit import AuditSettings, run_audit
from lambdascope.llc.llc import SGLDConfig
from lambdascope.llc.stages import Stage, detect_stages
from lambdascope.llc.theory import dln_learning_coefficient

WIDTHS = (20, 4, 4, 20)
SINGULAR_VALUES = (10.0, 3.5, 1.2)
INIT_STD = 0.03  # small: the unlearned modes' singular values stay ~1e-4, far below any plateau's
LEARNING_RATE = 0.05
RANK_TOLERANCE = 0.1  # a product singular value above this fraction of the smallest teacher one counts


@dataclass
class Checkpoint:
    step: int
    loss: float  # training loss (MSE on the teacher's data) at this step
    singular_values: list[float]  # of the end-to-end matrix
    rank: int
    model: torch.nn.Sequential = field(repr=False)
    llc: float = math.nan
    llc_std: float = math.nan
    llc_stderr: float = math.nan
    verdict: str = ""
    seconds: float = 0.0
    gamma: float = math.nan  # the localization its audit used


@dataclass
class Plateau:
    stage: Stage
    rank: int  # the ranks of its checkpoints (all equal, else -1)
    llc: float  # mean λ̂ over its checkpoints
    theory: float

    @property
    def rel_err(self) -> float:
        return (self.llc - self.theory) / self.theory


def teacher(seed: int, widths: Sequence[int] = WIDTHS, singular_values: Sequence[float] = SINGULAR_VALUES
            ) -> torch.Tensor:
    """An end-to-end matrix (out × in) with exactly these singular values, in random directions."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(widths[-1], widths[-1], generator=g))
    v, _ = torch.linalg.qr(torch.randn(widths[0], widths[0], generator=g))
    s = torch.zeros(widths[-1], widths[0])
    for i, value in enumerate(singular_values):
        s[i, i] = value
    return u @ s @ v.T


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).square().mean()


def log_spaced(last: int, per_decade: int, first: int = 10) -> list[int]:
    """Checkpoint steps from ``first`` to ``last``, ``per_decade`` per factor of ten."""
    count = max(2, round(per_decade * math.log10(last / first)) + 1)
    return sorted({round(first * (last / first) ** (i / (count - 1))) for i in range(count)})


def product_singular_values(model: torch.nn.Sequential) -> list[float]:
    with torch.no_grad():
        product = model[0].weight
        for layer in list(model)[1:]:
            product = layer.weight @ product
        return torch.linalg.svdvals(product).tolist()


def train(seed: int, steps: int, checkpoints: Sequence[int], n: int = 10_000,
          widths: Sequence[int] = WIDTHS, singular_values: Sequence[float] = SINGULAR_VALUES
          ) -> tuple[list[Checkpoint], torch.Tensor]:
    """Gradient descent from a small initialization on the population loss of isotropic Gaussian
    inputs, E‖(P − T)x‖² / out = ‖P − T‖²_F / out (P the end-to-end matrix: the large-n limit of
    the usual full-batch run, with no sampling noise in its timing); returns the checkpoints and
    the n inputs x ~ N(0, I) the audits use."""
    g = torch.Generator().manual_seed(seed + 1)
    target = teacher(seed, widths, singular_values)
    model = torch.nn.Sequential(*[torch.nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:])])
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * INIT_STD)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    wanted, out = set(checkpoints), []
    floor = RANK_TOLERANCE * min(singular_values)

    def population_loss() -> torch.Tensor:
        product = model[0].weight
        for layer in list(model)[1:]:
            product = layer.weight @ product
        return (product - target).square().sum() / widths[-1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 20×4 matrices: one thread is fastest, and never waits for a busy core
    try:
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            loss = population_loss()
            loss.backward()
            optimizer.step()
            if step in wanted:
                values = product_singular_values(model)
                with torch.no_grad():
                    now = population_loss().item()
                out.append(Checkpoint(step, now, values, sum(v > floor for v in values),
                                      copy.deepcopy(model).eval()))
    finally:
        torch.set_num_threads(threads)
    return out, torch.randn(n, widths[0], generator=g)


def audit(checkpoints: list[Checkpoint], x: torch.Tensor, config: SGLDConfig,
          progress: Callable[[Checkpoint], None] | None = None) -> None:
    """λ̂ of every checkpoint against its own outputs (in place). An unset γ is set from the
    first checkpoint's curvature and held for the rest, as the product's audit of several
    versions does (services/estimator/worker.py): a trajectory's λ̂ compare at one γ."""
    for c in checkpoints:
        began = time.perf_counter()
        result = run_audit(c.model, x, torch.zeros(x.shape[0], WIDTHS[-1]), mse,
                           AuditSettings(sgld=config, model_targets=True), device="cpu")
        c.llc, c.llc_std = result.llc.mean, result.llc.std
        c.llc_stderr = result.llc.std / math.sqrt(len(result.llc.per_chain))
        c.verdict, c.seconds = result.verdict.state, time.perf_counter() - began
        c.gamma = result.llc.calibration.localization if result.llc.calibration else config.localization
        if config.localization is None:
            config = dataclasses.replace(config, localization=c.gamma)
        if progress is not None:
            progress(c)


def plateaus(checkpoints: list[Checkpoint], widths: Sequence[int] = WIDTHS) -> tuple[list[Stage], list[Plateau]]:
    """The stages of λ̂ over training, and its flat ones with the theory for their rank."""
    found = detect_stages([c.step for c in checkpoints], [c.llc for c in checkpoints],
                          [c.llc_stderr for c in checkpoints], [c.loss for c in checkpoints])
    out = []
    for st in found:
        if st.llc != "flat":
            continue
        inside = checkpoints[st.first:st.last + 1]
        ranks = {c.rank for c in inside}
        rank = ranks.pop() if len(ranks) == 1 else -1
        theory = dln_learning_coefficient(widths, rank) if rank >= 0 else math.nan
        out.append(Plateau(st, rank, sum(c.llc for c in inside) / len(inside), theory))
    return found, out
