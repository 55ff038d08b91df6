"""Training data: the bundled digits, seeded synthetic tasks, and a seeded train/test split.

Synthetic tasks are generated from their seed (nothing is downloaded), so a training spec names
its data completely. Each source returns a :class:`TrainingData` whose `rows_train` keeps each
training example's row in the data as generated: gradient-routing rules select rows by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

# Refuse synthetic data sets above this many float values (x and y together, about 2 GB).
MAX_SYNTHETIC_VALUES = 500_000_000


@dataclass
class TrainingData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    # Row of each training example in the data as given (before the split).
    rows_train: torch.Tensor
    # Facts about the generated task worth keeping with the job (teacher rank, ...).
    info: dict[str, float] = field(default_factory=dict)


def load_digits_dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797 images, bundled with scikit-learn: no download).

    Returns x: float32 [1797, 64] scaled to [0, 1] (pixel / 16), y: int64 [1797] in 0..9."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    return x, y


BUILTIN_DATASETS = {"digits": load_digits_dataset}


def split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int) -> TrainingData:
    """Shuffle with a seeded generator and hold out `test_fraction` of the rows.

    test_fraction 0 gives an empty test set. Deterministic given the seed; not stratified."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(x)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_test < 1:
        raise ValueError(f"test_fraction {test_fraction} leaves no training rows out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return TrainingData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], train_idx)


# --------------------------------------------------------------------------------------
# Synthetic tasks. The arguments are the fields of the TrainSpec's message for the source, with
# its meaning of 0 (the default). Each generator validates them and names the field at fault
# (relative to spec.dataset).


def dln_teacher(widths: Sequence[int], *, rank: int = 0, examples: int = 0, test_examples: int = 0,
                input_range: float = 0.0, noise_std: float = 0.0, seed: int = 0) -> TrainingData:
    """Teacher-student regression on a random deep linear network (DLN protocol of Furman & Lau):
    entries N(0, 1/fan_in); `rank` > 0 zeroes all but the largest `rank` singular values of
    the first layer, which caps the end-to-end rank; x ~ U(-R, R); y = teacher(x) + noise."""
    widths = list(widths)
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(f"dln_teacher.widths needs at least 2 positive entries, got {widths}")
    if not 0 <= rank <= min(widths):
        raise ValueError(f"dln_teacher.rank must be in 0..{min(widths)} (0 = full rank), "
                         f"got {rank}")
    n, n_test = _counts("dln_teacher", examples, test_examples, 10_000, 1_000)
    input_range = _positive("dln_teacher.input_range", input_range, 10.0)
    noise = _non_negative("dln_teacher.noise_std", noise_std)
    _check_size("dln_teacher", n + n_test, widths[0] + widths[-1])
    gen = torch.Generator().manual_seed(int(seed))
    mats = [torch.randn(b, a, generator=gen, dtype=torch.float64) / math.sqrt(a)
            for a, b in zip(widths[:-1], widths[1:])]
    if rank:
        u, s, vh = torch.linalg.svd(mats[0], full_matrices=False)
        s[rank:] = 0.0
        mats[0] = (u * s) @ vh
    product = mats[0]
    for m in mats[1:]:
        product = m @ product

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.rand(count, widths[0], generator=gen, dtype=torch.float64) * 2 - 1) * input_range
        y = x @ product.T
        if noise:
            y = y + noise * torch.randn(y.shape, generator=gen, dtype=torch.float64)
        return x.float(), y.float()

    x, y = draw(n)
    x_test, y_test = draw(n_test)
    teacher_rank = int(torch.linalg.matrix_rank(product))
    return TrainingData(x, y, x_test, y_test, torch.arange(n),
                        info={"teacher_rank": float(teacher_rank)})


def quadratic_regression(*, dim: int = 0, support: int = 0, examples: int = 0,
                         test_examples: int = 0, seed: int = 0) -> TrainingData:
    """Sparse linear regression for the quadratically parametrised model (HaoChen et al. 2021,
    the Anti-PGD paper's toy): x ~ N(0, I), w* = 1 on the first `support` coordinates, else 0,
    y = <w*, x> without noise. On this x the test MSE estimates ||v*v - w*||^2."""
    given_dim, dim = dim, dim or 100
    if dim < 1:
        raise ValueError(f"quadratic_regression.dim must be positive, got {given_dim}")
    given_support, support = support, support or 5
    if not 1 <= support <= dim:
        raise ValueError(f"quadratic_regression.support must be in 1..{dim}, got {given_support}")
    n, n_test = _counts("quadratic_regression", examples, test_examples, 40, 1_000)
    _check_size("quadratic_regression", n + n_test, dim + 1)
    gen = torch.Generator().manual_seed(int(seed))
    w_star = torch.zeros(dim, dtype=torch.float64)
    w_star[:support] = 1.0
    x = torch.randn(n + n_test, dim, generator=gen, dtype=torch.float64)
    y = (x @ w_star).unsqueeze(1)
    x, y = x.float(), y.float()
    return TrainingData(x[:n], y[:n], x[n:], y[n:], torch.arange(n),
                        info={"support": float(support)})


def modular_addition(modulus: int = 0, *, tokens: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs (a, b) of 0..p-1 with y = (a + b) mod p. x = one-hot(a) ++ one-hot(b) (float),
    or with `tokens` the token ids [a, b] (int64: a transformer's input); p = `modulus`, 0
    meaning 53. The caller splits it (the trainer: with the spec's test_fraction and seed)."""
    p = modulus or 53
    if not 2 <= p <= 1_000:
        raise ValueError(f"modular_addition.modulus must be in 2..1000, got {modulus}")
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if tokens:
        return torch.stack([a, b], dim=1), (a + b) % p
    eye = torch.eye(p)
    x = torch.cat([eye[a], eye[b]], dim=1)
    return x, (a + b) % p


def _counts(name: str, examples: int, test_examples: int, default: int, default_test: int
            ) -> tuple[int, int]:
    n = examples or default
    n_test = test_examples or default_test
    if n < 1:
        raise ValueError(f"{name}.examples must be positive, got {examples}")
    if n_test < 1:
        raise ValueError(f"{name}.test_examples must be positive, got {test_examples}")
    return n, n_test


def _positive(name: str, value: float, default: float) -> float:
    value = value or default
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value


def _non_negative(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value}")
    return value


def _check_size(name: str, rows: int, width: int) -> None:
    if rows * width > MAX_SYNTHETIC_VALUES:
        raise ValueError(f"{name}: {rows:,} examples × {width} values exceed the limit of "
                         f"{MAX_SYNTHETIC_VALUES:,} generated values")
