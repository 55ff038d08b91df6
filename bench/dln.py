"""The deep-linear-network (DLN) suite shared by the estimator benchmarks.

Follows the published DLN protocol (Furman & Lau, arXiv 2402.03698, merged into 2308.12108):

- teacher = a random bias-free DLN with layer widths H_0 (input) ... H_L (output); each layer's
  matrix has its rank cut with probability 1/2, the kept rank drawn uniformly from
  1 ... min(H_i, H_{i+1}) and the cut made by zeroing the smallest singular values;
- w* = the teacher itself (so L_n(w*) = 0: the student sits exactly at a global minimum);
- inputs x ~ U(-10, 10)^{H_0}, noise-free targets y = teacher(x), MSE (mean over all entries);
- n = 100,000 examples, minibatch 500, localization γ = 1, nβ = n / log n.

The true learning coefficient λ follows from the widths and the rank r of the end-to-end product
matrix (Aoyagi 2024; ``services.estimator.theory.dln_learning_coefficient``).

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

    @property
    def layers(self) -> int:
        return len(self.widths) - 1

    @property
    def num_parameters(self) -> int:
        return sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:]))

    def theory_lambda(self) -> float:
        return theory_lambda(self.widths, self.rank)


def theory_lambda(widths: tuple[int, ...], rank: int) -> float:
    from services.estimator.theory import dln_learning_coefficient  # lazy: not in devinterp's venv

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
                widths: tuple[int, int] = (10, 100)) -> Case:
    """A fresh DLN case: depth and each width drawn uniformly from the ranges, the teacher seeded
    from ``rng`` (its rank cuts as in the protocol), the product rank measured."""
    depth = rng.randint(*layers)
    shape = tuple(rng.randint(*widths) for _ in range(depth + 1))
    seed = rng.randrange(1, 2**31)
    _, rank = build_teacher(shape, seed)
    return Case(f"R{index}-L{depth}", shape, seed=seed, rank=rank)


def case_from_dict(d: dict) -> Case:
    return Case(d["name"], tuple(d["widths"]), seed=d["seed"], rank=d["rank"])


def case_to_dict(case: Case) -> dict:
    return {"name": case.name, "widths": list(case.widths), "seed": case.seed, "rank": case.rank}


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


def build_teacher(widths: tuple[int, ...], seed: int) -> tuple[DLN, int]:
    """The seeded teacher (float32 module) and the rank of its product matrix."""
    gen = torch.Generator().manual_seed(seed)
    mats = _teacher_matrices(widths, gen)
    model = DLN(widths)
    with torch.no_grad():
        for layer, w in zip(model, mats):
            layer.weight.copy_(w.to(torch.float32))
    return model, product_rank(mats)


def make_problem(case: Case, n: int = N_EXAMPLES) -> tuple[DLN, torch.Tensor, torch.Tensor]:
    """(model at w* = teacher, x, y) for a case; raises if the seeded cuts no longer give case.rank."""
    model, rank = build_teacher(case.widths, case.seed)
    if rank != case.rank:
        raise RuntimeError(f"case {case.name}: seeded teacher has product rank {rank}, suite says {case.rank}")
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
