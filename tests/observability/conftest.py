"""Fixtures of the observability tests: promtool, traffic through a real platform, its scrapes.

`platform`, `client` and `regression_files` come from tests/conftest.py.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import pytest
from obs_support import scrape


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary (Debian's `prometheus` package); installed with apt-get when this
    runs as root on Debian/Ubuntu and it is missing, else the test is skipped with the reason."""
    found = shutil.which("promtool")
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run("apt-get update -qq && apt-get install -y -qq prometheus", shell=True,
                           env=env, check=False, timeout=600, capture_output=True)
        except subprocess.TimeoutExpired:
            pass
        found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed and could not be installed here: install "
                    "Debian's `prometheus` package (apt-get install prometheus)")
    return found


@dataclasses.dataclass
class Traffic:
    audit: object  # the finished audit job (jobs_pb2.Job)
    training: object  # the finished training job
    before: dict[str, str]  # service -> /metrics text before the traffic
    scrapes: dict[str, str]  # service -> /metrics text after the traffic


@pytest.fixture(scope="session")
def traffic(platform, regression_files) -> Traffic:
    """Upload a model and a dataset, run a tiny audit and a tiny training run to completion,
    download the dataset back, then scrape every service."""
    from lambdascope.v1 import audit_pb2, models_pb2, trainer_pb2

    model_path, data_path = regression_files
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE)
    for key, value in dict(chains=2, draws=60, burnin=30, step_size=1e-4, localization=100.0,
                           batch_size=128, seed=1).items():
        setattr(config.sampler, key, value)
    spec = trainer_pb2.TrainSpec(
        model_name="obs-digits", loss=models_pb2.LOSS_KIND_CROSS_ENTROPY, epochs=1,
        batch_size=64, seed=7,
        architecture=models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[64, 16, 10])),
        dataset=trainer_pb2.DatasetSpec(builtin="digits", test_fraction=0.2),
        optimizer=trainer_pb2.OptimizerSpec(kind="adam", learning_rate=3e-3),
        checkpoints=trainer_pb2.CheckpointPolicy(count=1))
    before = {name: scrape(address) for name, address in platform.metrics.items()}
    with platform.client() as client:
        version = client.upload_model(model_path, "obs-regressor")
        dataset = client.upload_dataset(data_path, "obs-regression")
        training = client.start_training(spec)
        audit = client.wait(client.start_audit(version.id, dataset.id, config).id)
        training = client.wait(training.id)
    scrapes = {name: scrape(address) for name, address in platform.metrics.items()}
    return Traffic(audit, training, before, scrapes)
