"""Per-team quotas (lambdascope.quotas), configured as an operator would: a team at its running
limit waits while another team's job starts; a team at its waiting limit is refused with
RESOURCE_EXHAUSTED naming the limit (at once: the SDK's retry policy does not retry it); a team
past its stored bytes cannot upload, and nothing of the refused upload is kept."""
from __future__ import annotations

import json
import time

import grpc
import pytest

from lambdascope import auth
from lambdascope.local import LocalPlatform
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2
from tests.integration.test_team_isolation import snapshot
from tests.platform_probes import total

LONG = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE, sampler=audit_pb2.SamplerConfig(
    chains=1, draws=1_000_000, burnin=10, step_size=1e-4, localization=100.0, seed=1))


@pytest.fixture(scope="module")
def world(tmp_path_factory, regression_files):
    data_dir = tmp_path_factory.mktemp("quotas")
    model_path, data_path = regression_files
    small = model_path.stat().st_size + data_path.stat().st_size
    platform = LocalPlatform(data_dir, extra_env={
        "LAMBDASCOPE_MAX_CONCURRENT_JOBS": "3",
        "LAMBDASCOPE_QUOTA_RUNNING_JOBS": "1", "LAMBDASCOPE_QUOTA_QUEUED_JOBS": "1",
        # team-c may store its model and dataset, and not one byte more
        "LAMBDASCOPE_TEAM_QUOTAS": json.dumps({"team-c": {"stored_bytes": small}})})
    platform.start()
    try:
        with platform.client() as admin:
            keys = {}
            for team in ("team-a", "team-b", "team-c"):
                admin.create_team(team)
                keys[team] = admin.create_key(team, auth.Role.ROLE_WRITER).secret
        inputs = {}
        for team in ("team-a", "team-b"):
            with platform.client(api_key=keys[team]) as client:
                inputs[team] = (client.upload_model(model_path, "mlp").id,
                                client.upload_dataset(data_path, "reg").id)
        yield {"platform": platform, "keys": keys, "inputs": inputs, "data_dir": data_dir,
               "files": regression_files}
    finally:
        platform.stop()


def wait_state(client, job_id: str, state: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get_job(job_id).state != state:
        assert time.monotonic() < deadline, (job_id, client.get_job(job_id))
        time.sleep(0.1)


def test_a_team_at_its_job_limits_waits_or_is_refused_while_another_team_starts(world):
    platform, keys = world["platform"], world["keys"]
    with platform.client(api_key=keys["team-a"]) as a, platform.client(api_key=keys["team-b"]) as b:
        first = a.start_audit(*world["inputs"]["team-a"], LONG)
        second = a.start_audit(*world["inputs"]["team-a"], LONG)
        try:
            wait_state(a, first.id, jobs_pb2.JOB_STATE_RUNNING)
            # team-a runs one job at most: the second waits although the service has room
            with pytest.raises(grpc.RpcError) as refused:
                a.start_audit(*world["inputs"]["team-a"], LONG)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queued_jobs = 1" in refused.value.details(), refused.value.details()
            # another team's job starts meanwhile
            theirs = b.start_audit(*world["inputs"]["team-b"], LONG)
            wait_state(b, theirs.id, jobs_pb2.JOB_STATE_RUNNING)
            assert a.get_job(second.id).state == jobs_pb2.JOB_STATE_QUEUED
            b.cancel_job(theirs.id)
            # team-a's first job ends: its waiting one starts
            a.cancel_job(first.id)
            wait_state(a, second.id, jobs_pb2.JOB_STATE_RUNNING)
        finally:
            for job in (first, second):
                a.cancel_job(job.id)
    # Answered once: the SDK's retry policy (which retries RESOURCE_EXHAUSTED) did not repeat it.
    assert refusals(platform, "StartAudit") == 1


def refusals(platform: LocalPlatform, method: str) -> float:
    """RESOURCE_EXHAUSTED answers the estimator counted for `method`."""
    return total(platform.metrics["estimator"], "grpc_server_handled_total", grpc_method=method,
                 grpc_code="RESOURCE_EXHAUSTED")


def test_uploads_past_a_teams_stored_bytes_are_refused_and_keep_nothing(world):
    platform, keys = world["platform"], world["keys"]
    model_path, data_path = world["files"]
    with platform.client(api_key=keys["team-c"]) as c:
        version = c.upload_model(model_path, "mlp")
        c.upload_dataset(data_path, "reg")
        assert c.upload_model(model_path, "again").sha256 == version.sha256  # held already: free
        before = snapshot(world["data_dir"])
        other = model_path.with_name("other.bin")
        other.write_bytes(b"\0" * 10)
        with pytest.raises(grpc.RpcError) as refused:
            c.upload_dataset(other, "more")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "stored_bytes = " in refused.value.details(), refused.value.details()
        assert snapshot(world["data_dir"]) == before
        c.delete_model_version("again/latest")  # deleting what the quota counts makes room only when
        # the content is gone from the team: "mlp" still holds the same bytes
        with pytest.raises(grpc.RpcError):
            c.upload_dataset(other, "more")
    with platform.client(api_key=keys["team-a"]) as a:  # other teams are not limited by it
        assert a.upload_model(model_path, "another").sha256 == version.sha256
