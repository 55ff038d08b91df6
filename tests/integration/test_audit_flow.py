"""An audit end to end through real servers: upload, audit, report, CLI, idempotent starts."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2

MSE = models_pb2.LOSS_KIND_MSE


def small_config(**sampler) -> audit_pb2.AuditConfig:
    config = audit_pb2.AuditConfig(loss=MSE)
    defaults = dict(chains=3, draws=100, burnin=50, step_size=1e-4, localization=100.0,
                    batch_size=128, seed=1)
    for key, value in {**defaults, **sampler}.items():
        setattr(config.sampler, key, value)
    return config


@pytest.fixture(scope="module")
def uploaded(platform, regression_files):
    model_path, data_path = regression_files
    with platform.client() as c:
        return c.upload_model(model_path, "regressor"), c.upload_dataset(data_path, "regression")


def test_every_service_is_serving_with_reflection(platform):
    for name, address in platform.endpoints.items():
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")]), timeout=5)
            services = {s.name for a in answers for s in a.list_services_response.service}
            assert f"lambdascope.v1.{name.capitalize()}" in services
            assert "grpc.health.v1.Health" in services


def test_upload_audit_and_read_the_report_back(client, uploaded):
    version, dataset = uploaded
    assert version.input_shape == [-1, 3] and version.output_shape == [-1, 1]
    assert dataset.num_examples == 512
    job = client.start_audit(version.id, dataset.id, small_config())
    events = []
    done = client.wait(job.id, on_event=events.append)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
    assert any(e.state == jobs_pb2.JOB_STATE_RUNNING and e.step > 0 for e in events)
    assert any("llc" in e.metrics for e in events if e.state == jobs_pb2.JOB_STATE_RUNNING)
    assert events[-1].state == jobs_pb2.JOB_STATE_SUCCEEDED
    report = client.get_report(done.output_ids[0])
    assert report.model_version_id == version.id and report.dataset_id == dataset.id
    assert len(report.llc.per_chain) == 3
    assert all(math.isfinite(v) and v > 0 for v in report.llc.per_chain)
    assert report.llc.mean == pytest.approx(sum(report.llc.per_chain) / 3)
    assert done.metrics["llc"] == pytest.approx(report.llc.mean)
    assert len(report.traces) == 3 and len(report.traces[0].loss) == 150
    # The defaults the request left out are written into the report.
    assert report.config.sampler.nbeta == pytest.approx(512 / math.log(512))
    assert report.config.sampler.thin == 1
    assert report.timing.seconds >= report.timing.sampling_seconds > 0


def test_downloads_return_the_uploaded_bytes(client, uploaded, regression_files, tmp_path):
    version, dataset = uploaded
    model_path, data_path = regression_files
    got = client.download_model_version(version.id, tmp_path / "m.pt2")
    assert got.read_bytes() == model_path.read_bytes()
    got = client.download_dataset(dataset.id, tmp_path / "d.safetensors")
    assert got.read_bytes() == data_path.read_bytes()
    # the same bytes uploaded twice make two versions of one stored object
    first = client.upload_model(model_path, "regressor-copies")
    second = client.upload_model(model_path, "regressor-copies")
    assert (first.version, second.version) == (1, 2)
    assert first.sha256 == second.sha256 == version.sha256


def test_retried_start_returns_the_same_job(client, uploaded):
    version, dataset = uploaded
    request_id = str(uuid.uuid4())
    first = client.start_audit(version.id, dataset.id, small_config(draws=20), request_id)
    again = client.start_audit(version.id, dataset.id, small_config(draws=20), request_id)
    assert again.id == first.id
    with pytest.raises(grpc.RpcError) as err:
        client.start_audit(version.id, dataset.id, small_config(draws=21), request_id)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.id in err.value.details()
    client.wait(first.id)


def test_cancel_mid_run_ends_cancelled(client, uploaded):
    version, dataset = uploaded
    job = client.start_audit(version.id, dataset.id, small_config(draws=200_000, chains=2))
    for event in client.watch(job.id):
        if event.state == jobs_pb2.JOB_STATE_RUNNING and event.step > 0:
            break
    cancelled = client.cancel_job(job.id)
    assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED
    assert client.get_job(job.id).state == jobs_pb2.JOB_STATE_CANCELLED
    listed = list(client.list_jobs("audit", state=jobs_pb2.JOB_STATE_CANCELLED))
    assert job.id in {j.id for j in listed}


def test_cli_audit_writes_a_json_report(platform, regression_files, tmp_path):
    model_path, data_path = regression_files
    out = tmp_path / "report.json"
    address = platform.endpoints["estimator"]
    result = subprocess.run(
        [sys.executable, "-m", "lambdascope.cli", "audit", "--model", str(model_path),
         "--data", str(data_path), "--loss", "mse", "--chains", "2", "--draws", "80",
         "--burnin", "40", "--step-size", "1e-4", "--localization", "100", "--seed", "3",
         "--json", str(out), "--server", address],
        capture_output=True, text=True, timeout=180, env={**os.environ, "LAMBDASCOPE_HOME": str(tmp_path), "LAMBDASCOPE_API_KEY": platform.api_key})
    assert result.returncode == 0, result.stderr
    assert "LLC" in result.stdout
    report = json.loads(out.read_text())
    assert len(report["llc"]["per_chain"]) == 2
    assert math.isfinite(report["llc"]["mean"]) and report["llc"]["mean"] > 0
    assert report["llc"]["std"] >= 0
    assert report["config"]["sampler"]["seed"] == "3"  # uint64 is a string in proto JSON
    assert report["timing"]["seconds"] > 0


def test_cli_reports_a_missing_platform_clearly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lambdascope.cli", "jobs"], capture_output=True, text=True,
        timeout=60, env={**{k: v for k, v in os.environ.items() if not k.startswith("LAMBDASCOPE")},
                         "LAMBDASCOPE_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "lambdascope up" in result.stderr
