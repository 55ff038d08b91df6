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
    from tests import regression_data

    return regression_data.write(tmp_path_factory.mktemp("regression"))


def pytest_collection_finish(session) -> None:
    """A run that collects nothing is a broken run, not a green one."""
    if not session.items and not session.config.option.keyword \
            and not session.config.option.markexpr:
        raise pytest.UsageError("no tests were collected: check testpaths and file names")
