"""Shared fixtures: a real platform (three service processes on loopback ports)."""
from __future__ import annotations

import pathlib

import pytest

from lambdascope.client import Client
from lambdascope.local import LocalPlatform


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> LocalPlatform:
    data_dir = tmp_path_factory.mktemp("platform")
    with LocalPlatform(data_dir, extra_env={"LAMBDASCOPE_MAX_CHAIN_STEPS": "2000000"}) as p:
        yield p


@pytest.fixture
def client(platform) -> Client:
    with platform.client() as c:
        yield c


@pytest.fixture(scope="session")
def regression_files(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """A trained regression MLP as a .pt2 archive, and its training data as safetensors."""
    import torch
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("regression")
    torch.manual_seed(0)
    x = torch.randn(512, 3)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]])) + 0.1 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(1500):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    model_path, data_path = out / "regressor.pt2", out / "regression.safetensors"
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x[:2].clone(),), dynamic_shapes=({0: batch},))
    torch.export.save(program, model_path)
    save_file({"x": x, "y": y}, str(data_path))
    return model_path, data_path


def pytest_collection_finish(session) -> None:
    """A run that collects nothing is a broken run, not a green one."""
    if not session.items and not session.config.option.keyword \
            and not session.config.option.markexpr:
        raise pytest.UsageError("no tests were collected: check testpaths and file names")
