"""Datasets bundled with the platform, and a seeded train/test split."""

from __future__ import annotations

import torch


def load_digits_dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797 images, bundled with scikit-learn: no download).

    Returns x: float32 [1797, 64] scaled to [0, 1] (pixel / 16), y: int64 [1797] in 0..9."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    return x, y


BUILTIN_DATASETS = {"digits": load_digits_dataset}


def train_test_split(
    x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shuffle with a seeded generator and hold out `test_fraction` of the rows.

    Returns (x_train, y_train, x_test, y_test), the argument order of `training.train`.
    test_fraction 0 gives an empty test set. Deterministic given the seed; not stratified."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(x)
    n_test = round(n * test_fraction)
    if test_fraction > 0:
        n_test = max(1, n_test)
    if n - n_test < 1:
        raise ValueError(
            f"test_fraction {test_fraction} leaves no training rows out of {n}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=generator)
    test_idx, train_idx = order[:n_test], order[n_test:]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]
