"""The deep-linear-network (DLN) suite shared by the estimator benchmarks.

Follows the published DLN protocol (Furman & Lau, arXiv 2402.03698, merged into 2308.12108):

- teacher = a random bias-free DLN with layer widths H_0 (input) ... H_L (output); each layer's
  matrix has its rank cut with probability 1/2, the kept rank drawn uniformly from
  1 ... min(H_i, H_{i+1}) and the cut made by zeroing the smallest singular values;
- w* = the teacher itself (so L_n(w*) = 0: the student sits exactly at a global minimum);
- inputs x ~ U(-10, 10)^{H_0}, noise-free targets y = teacher(x), MSE (mean over all entries);
- n = 100,000 examples, minibatch 500, localization γ = 1, nβ = n / log n.

The true learning coefficient λ follows from the widths and the rank r of the end-to-end product
matrix (Aoyagi 2024; ``lambdascope.llc.theory.dln_learning_coefficient``).

Everything is seeded: a case is (name, widths, seed) and the rank its seeded cuts give is written
down in :data:`CASES` and checked when the teacher is built, so a case can never silently change.

This module needs only torch (and numpy): the devinterp worker imports it from its own
virtual environment. The theory import happens lazily in :func:`theory_lambda`.
"""

from __future__ import annotations

import hashlib
import random
import math
from dataclasses import dataclass

import torch

N_EXAMPLES = 100_000
BATCH_SIZE = 500
LOCALIZATION = 1.0
INPUT_RANGE = 10.0
CUT_PROBABILITY = 0.5
# The published protocol's hand-picked step size for widths <= 100 (devinterp has no calibration).
PUBLISHED_STEP_SIZE = 5e-7


def default_nbeta(n: int = N_EXAMPLES) -> float:
    return n / math.log(n)


@dataclass(frozen=True)
class Case:
    name: str
    widths: tuple[int, ...]  # H_0 (input) ... H_L (output)
    seed: int  # seeds the teacher (weights and rank cuts) and the data
    rank: int  # rank of the teacher's product matrix that the seeded cuts give (checked)
    teacher: str = "cuts"  # how w* is built from (widths, seed, rank): see TEACHERS

    @property
    def layers(self) -> int:
        return len(self.widths) - 1

    @property
    def num_parameters(self) -> int:
        return sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:]))

    def theory_lambda(self) -> float:
        return theory_lambda(self.widths, self.rank)

    def hessian_bound(self) -> float:
        """rank(∇²L(w*)) / 2, a lower bound on the LLC at this teacher (see :func:`hessian_rank`)."""
        return hessian_rank(teacher_matrices(self)) / 2


def theory_lambda(widths: tuple[int, ...], rank: int) -> float:
    from lambdascope.llc.theory import dln_learning_coefficient  # lazy: not in devinterp's venv

    return dln_learning_coefficient(widths, rank)


# Fixed suite: 2-6 layers, widths 10-100, ranks from the seeded cuts (ordered by size d).
CASES: tuple[Case, ...] = (
    Case("L2-small", (10, 20, 10), seed=1, rank=10),
    Case("L3-narrow", (12, 18, 15, 10), seed=2, rank=7),
    Case("L2-wide", (30, 50, 40), seed=3, rank=30),
    Case("L4-mixed", (15, 25, 35, 25, 15), seed=4, rank=15),
    Case("L5-deep", (20, 30, 20, 30, 20, 30), seed=5, rank=8),
    Case("L6-deepest", (10, 20, 30, 40, 30, 20, 10), seed=6, rank=5),
    Case("L3-bottleneck", (40, 60, 20, 50), seed=7, rank=17),
    Case("L4-wide", (50, 40, 60, 40, 30), seed=8, rank=5),
    Case("L2-widest", (100, 80, 90), seed=9, rank=11),
)

# The 864-parameter DLN of the notes' speed figures (devinterp ~2.2 ms per chain-step on one
# thread, bare forward+backward ~0.24 ms).
SPEED_CASE = Case("speed-864", (12, 24, 12, 24), seed=11, rank=1)


def case_by_name(name: str) -> Case:
    for case in (*CASES, SPEED_CASE):
        if case.name == name:
            return case
    raise KeyError(f"no DLN case named {name!r}; known: {[c.name for c in (*CASES, SPEED_CASE)]}")


def select_cases(spec: str | None) -> list[Case]:
    """``None``/"all" → every case; else comma-separated names or 0-based indices into CASES."""
    if spec is None or spec == "all":
        return list(CASES)
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        out.append(CASES[int(item)] if item.isdigit() else case_by_name(item))
    return out


def random_case(rng: "random.Random", index: int, layers: tuple[int, int] = (2, 6),
                widths: tuple[int, int] = (10, 100), teacher: str = "aligned") -> Case:
    """A fresh DLN case: depth and each width drawn uniformly from the ranges, the teacher seeded
    from ``rng`` (the product rank r from the protocol's rank cuts), built as ``teacher`` says."""
    depth = rng.randint(*layers)
    shape = tuple(rng.randint(*widths) for _ in range(depth + 1))
    seed = rng.randrange(1, 2**31)
    _, rank = build_teacher(shape, seed)
    return Case(f"R{index}-L{depth}", shape, seed=seed, rank=rank, teacher=teacher)


def case_from_dict(d: dict) -> Case:
    return Case(d["name"], tuple(d["widths"]), seed=d["seed"], rank=d["rank"], teacher=d.get("teacher", "cuts"))


def case_to_dict(case: Case) -> dict:
    return {"name": case.name, "widths": list(case.widths), "seed": case.seed, "rank": case.rank,
            "teacher": case.teacher}


class DLN(torch.nn.Sequential):
    """Bias-free deep linear network H_0 → ... → H_L."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__(*(torch.nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])))


def _teacher_matrices(widths: tuple[int, ...], gen: torch.Generator) -> list[torch.Tensor]:
    """Layer matrices (out × in, float64): N(0, 1/fan_in) entries, each cut with probability 1/2."""
    mats = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        w = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)
        if torch.rand((), generator=gen).item() < CUT_PROBABILITY:
            full = min(fan_in, fan_out)
            keep = int(torch.randint(1, full + 1, (), generator=gen))
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            s[keep:] = 0.0
            w = (u * s) @ vh
        mats.append(w)
    return mats


def product_rank(mats: list[torch.Tensor]) -> int:
    prod = mats[0]
    for w in mats[1:]:
        prod = w @ prod
    return int(torch.linalg.matrix_rank(prod))


def _aligned_matrices(widths: tuple[int, ...], rank: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Every layer of rank exactly ``rank``, all passing one r-dimensional signal: layer i is
    Q_i C_i Q_{i-1}ᵀ with Q_j a random orthonormal H_j × r frame and C_i an r × r Gaussian
    (entries N(0, 1/r), so singular values of order 1, as the cut teachers have)."""
    frames = [torch.linalg.qr(torch.randn(h, rank, generator=gen, dtype=torch.float64))[0] for h in widths]
    return [frames[i + 1] @ (torch.randn(rank, rank, generator=gen, dtype=torch.float64) / math.sqrt(rank))
            @ frames[i].T for i in range(len(widths) - 1)]


# How w* is built. "cuts" is the published protocol: random layers, each cut to a random rank
# with probability 1/2. Aoyagi's λ is the *global* learning coefficient, the smallest local one
# on the set of true parameters; at a cut teacher whose other layers keep full rank the LLC can
# be larger, and it is at least rank(∇²L(w*))/2 (measured: 167 against Aoyagi's 102 on a
# rank-2 four-layer case). "aligned" puts w* at the most singular point for the same product
# rank r (every layer of rank r, one shared signal path), where the local coefficient is the
# global one, so Aoyagi's λ is the ground truth for the LLC at w*.
TEACHERS = ("cuts", "aligned")


def teacher_matrices(case: Case) -> list[torch.Tensor]:
    """The case's layer matrices (out × in, float64), seeded."""
    if case.teacher not in TEACHERS:
        raise ValueError(f"case {case.name}: teacher {case.teacher!r} is not one of {TEACHERS}")
    gen = torch.Generator().manual_seed(case.seed)
    mats = _teacher_matrices(case.widths, gen)  # the protocol's draw, which fixes case.rank
    if case.teacher == "aligned":
        mats = _aligned_matrices(case.widths, case.rank, gen)
    return mats


def hessian_rank(mats: list[torch.Tensor]) -> int:
    """Rank of the Jacobian of w ↦ W_L ⋯ W_1 at the teacher, which is the rank of the Hessian of the
    MSE at w* (inputs with full-rank covariance). In coordinates that split off the Hessian's
    range, the loss is a sum of k squares plus a nonnegative rest, so the volume of
    {L < t} shrinks at least as fast as t^(k/2): the LLC at w* is at least k/2."""
    # The Jacobian's block for layer i is vec(A δ B) = (Bᵀ ⊗ A) vec(δ), with A the product of the
    # layers after i and B of those before; the rank of J is the rank of J Jᵀ = Σ_i (BᵀB) ⊗ (AAᵀ),
    # an (H_0·H_L)-square matrix, far smaller than J itself for wide hidden layers.
    gram = torch.zeros(mats[0].shape[1] * mats[-1].shape[0], mats[0].shape[1] * mats[-1].shape[0],
                       dtype=torch.float64)
    for i in range(len(mats)):
        before = torch.eye(mats[0].shape[1], dtype=torch.float64)
        for w in mats[:i]:
            before = w @ before
        after = torch.eye(mats[i].shape[0], dtype=torch.float64)
        for w in mats[i + 1:]:
            after = w @ after
        gram += torch.kron(before.T @ before, after @ after.T)
    ev = torch.linalg.eigvalsh(gram)
    return int((ev > ev[-1] * gram.shape[0] * 1e-13).sum())


def build_teacher(widths: tuple[int, ...], seed: int) -> tuple[DLN, int]:
    """The seeded cut teacher (float32 module) and the rank of its product matrix."""
    gen = torch.Generator().manual_seed(seed)
    mats = _teacher_matrices(widths, gen)
    return _module(widths, mats), product_rank(mats)


def _module(widths: tuple[int, ...], mats: list[torch.Tensor]) -> DLN:
    model = DLN(widths)
    with torch.no_grad():
        for layer, w in zip(model, mats):
            layer.weight.copy_(w.to(torch.float32))
    return model


def make_problem(case: Case, n: int = N_EXAMPLES) -> tuple[DLN, torch.Tensor, torch.Tensor]:
    """(model at w* = teacher, x, y) for a case; raises if the teacher's product rank is not case.rank."""
    mats = teacher_matrices(case)
    rank = product_rank(mats)
    if rank != case.rank:
        raise RuntimeError(f"case {case.name}: seeded teacher has product rank {rank}, suite says {case.rank}")
    model = _module(case.widths, mats)
    gen = torch.Generator().manual_seed(10_000 + case.seed)
    x = (torch.rand(n, case.widths[0], generator=gen) * 2 - 1) * INPUT_RANGE
    model.eval()
    with torch.no_grad():
        y = model(x)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, x, y


def digest(*tensors: torch.Tensor) -> str:
    """Short hash of tensors' bytes: both benchmark processes check they built the same problem."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(output, target)


if __name__ == "__main__":  # print the suite (and regenerate the ranks when editing CASES)
    for case in (*CASES, SPEED_CASE):
        _, r = build_teacher(case.widths, case.seed)
        flag = "" if r == case.rank else f"   <-- seeded rank is {r}"
        lam = theory_lambda(case.widths, r)
        print(f"{case.name:14s} L={case.layers} widths={case.widths} d={case.num_parameters:6d} "
              f"r={r:3d} λ={lam:9.2f} λ/(d/2)={lam / (case.num_parameters / 2):.3f}{flag}")
