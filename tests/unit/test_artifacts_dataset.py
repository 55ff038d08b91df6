"""lambdascope.artifacts.dataset: datasets round trip, and files that are not exactly `x` and `y`
with matching leading dimensions and accepted dtypes are refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lambdascope.artifacts import ArtifactError, DatasetInfo, TensorInfo, inspect_dataset, load_dataset
from tests.artifact_samples import expect
from tests.artifact_samples import legit  # noqa: F401 - a fixture, used by name


def test_dataset_round_trip(legit: dict, tmp_path: Path) -> None:
    assert inspect_dataset(legit["data"]) == DatasetInfo(
        10, TensorInfo("float32", (10, 4)), TensorInfo("float32", (10, 1))
    )
    x, y = load_dataset(legit["data"])
    assert torch.equal(x, legit["x"]) and torch.equal(y, legit["y"])
    p = tmp_path / "cls.safetensors"
    save_file({"x": torch.randn(5, 3).half(), "y": torch.arange(5)}, p)
    assert inspect_dataset(p) == DatasetInfo(5, TensorInfo("float16", (5, 3)), TensorInfo("int64", (5,)))


BAD_DATASETS = {
    "missing_y": ({"x": torch.randn(4, 2)}, ["missing 'y'"]),
    "extra": ({"x": torch.randn(4, 2), "y": torch.randn(4), "z": torch.ones(1)}, ["unexpected 'z'"]),
    "leading_dims": ({"x": torch.randn(4, 2), "y": torch.randn(5)}, ["4 examples", "5"]),
    "bool_x": ({"x": torch.ones(4, 2, dtype=torch.bool), "y": torch.randn(4)}, ["x must be floating"]),
    "bool_y": ({"x": torch.randn(4, 2), "y": torch.ones(4, dtype=torch.bool)}, ["y must be"]),
    "scalar_x": ({"x": torch.tensor(1.0), "y": torch.randn(1)}, ["at least 1-D"]),
    "empty": ({"x": torch.randn(0, 2), "y": torch.randn(0)}, ["no examples"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_bad_dataset_rejected(case: str, tmp_path: Path) -> None:
    tensors, words = BAD_DATASETS[case]
    p = tmp_path / "d.safetensors"
    save_file(tensors, p)
    with pytest.raises(ArtifactError) as e:
        inspect_dataset(p)
    expect(e, *words)
    with pytest.raises(ArtifactError):
        load_dataset(p)
