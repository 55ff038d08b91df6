"""The object store down for a while (moto's S3 server stopped, then started again on the same
port): the registry's health turns NOT_SERVING and back, an upload meanwhile is refused with
UNAVAILABLE and leaves nothing behind, and a training run carries on once S3 is back (its
worker retried from its last checkpoint)."""
from __future__ import annotations

import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lambdascope.local import LocalPlatform
from lambdascope.v1 import jobs_pb2, registry_pb2
from tests.integration.test_training_flow import digits_spec
from tests.s3server import RestartableS3


@pytest.fixture
def s3():
    server = RestartableS3()
    yield server
    server.stop()


def serving(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_an_s3_outage_is_reported_refused_cleanly_and_outlived(tmp_path, s3, regression_files):
    model_path, data_path = regression_files
    env = {"LAMBDASCOPE_OBJECT_STORE": f"s3://outage-{uuid.uuid4().hex[:8]}/artifacts",
           "LAMBDASCOPE_S3_ENDPOINT": s3.endpoint, "LAMBDASCOPE_S3_ACCESS_KEY": "test",
           "LAMBDASCOPE_S3_SECRET_KEY": "test-secret", "LAMBDASCOPE_S3_SECURE": "false",
           "LAMBDASCOPE_S3_REGION": "us-east-1", "LAMBDASCOPE_HEALTH_INTERVAL_SECONDS": "0.5",
           "LAMBDASCOPE_RETRY_BACKOFF_SECONDS": "1", "LAMBDASCOPE_JOB_BACKOFF_LIMIT": "6"}
    serving_now = health_pb2.HealthCheckResponse.SERVING
    with LocalPlatform(tmp_path / "data", extra_env=env) as platform, platform.client() as client:
        registry = platform.endpoints["registry"]
        assert serving(registry) == serving_now
        client.upload_dataset(data_path, "before")

        spec = digits_spec("through-outage", epochs=0, steps=3000)
        spec.checkpoints.count = 0
        spec.checkpoints.steps[:] = [200, 1000, 2000]
        job = client.start_training(spec)
        wait_for(lambda: client.get_job(job.id).step > 300, "training never started", 120)

        s3.stop()
        wait_for(lambda: serving(registry) == health_pb2.HealthCheckResponse.NOT_SERVING,
                 "the registry kept reporting SERVING with its object store down")
        assert serving(platform.endpoints["trainer"]) == serving_now  # its database is up
        # the SDK streams the upload again until its deadline (20 s here), then says why it failed
        with platform.client(timeout=20) as impatient, pytest.raises(grpc.RpcError) as refused:
            began = time.monotonic()
            impatient.upload_model(model_path, "mlp-outage")
        assert time.monotonic() - began > 10, "the upload was not retried through the outage"
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "object store" in refused.value.details().lower() or "s3" in refused.value.details().lower()
        time.sleep(3)  # the training run meets the outage at its next checkpoint
        s3.start()
        wait_for(lambda: serving(registry) == serving_now, "the registry never recovered")

        with pytest.raises(grpc.RpcError) as missing:  # nothing half-written by the refused upload
            client.registry.GetModel(registry_pb2.GetModelRequest(name="mlp-outage"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.upload_model(model_path, "mlp-outage").id  # works again

        done = client.wait(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
        steps = [client.get_model_version(v).lineage.step for v in done.output_ids]
        assert steps == [200, 1000, 2000, 3000], steps
