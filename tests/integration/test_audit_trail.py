"""The audit trail: every call of a writing RPC and every denied call, on each of the three
services, with who, team, RPC, object and answer; `lambdascope admin log` reads it; denied calls
are counted by reason. Key secrets never appear in it."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from lambdascope import auth
from lambdascope.local import LocalPlatform
from lambdascope.v1 import access_pb2, audit_pb2, models_pb2
from tests.integration.test_team_isolation import SERVICES, _all_methods
from tests.platform_probes import total

SAMPLER = audit_pb2.SamplerConfig(chains=2, draws=40, burnin=20, step_size=1e-4,
                                  localization=100.0, seed=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory, regression_files):
    platform = LocalPlatform(tmp_path_factory.mktemp("trail"))
    platform.start()
    try:
        with platform.client() as admin:
            admin.create_team("team-a")
            admin.create_team("team-b")
            keys = {"a": admin.create_key("team-a", auth.Role.ROLE_WRITER, user="alice").secret,
                    "a_reader": admin.create_key("team-a", auth.Role.ROLE_READER).secret,
                    "b": admin.create_key("team-b", auth.Role.ROLE_WRITER).secret}
        yield {"platform": platform, "keys": keys, "files": regression_files}
    finally:
        platform.stop()


def test_writes_and_denials_are_recorded_on_every_service(world):
    platform, keys = world["platform"], world["keys"]
    model_path, data_path = world["files"]
    with platform.client(api_key=keys["a"]) as a:
        version = a.upload_model(model_path, "mlp")
        dataset = a.upload_dataset(data_path, "reg")
        a.set_alias("mlp", "production", version.id)
        job = a.wait(a.start_audit(version.id, dataset.id, audit_pb2.AuditConfig(
            loss=models_pb2.LOSS_KIND_MSE, sampler=SAMPLER)).id)
        list(a.list_model_versions("mlp"))  # a read: not recorded
    a_id = auth.split_key(keys["a"])[0]
    with platform.client(api_key=keys["a_reader"]) as reader:
        with pytest.raises(grpc.RpcError):
            reader.delete_model_version(version.id)  # role
    with platform.client(api_key=keys["b"]) as b:
        with pytest.raises(grpc.RpcError):
            b.set_alias("team-a/mlp", "production", version.id)  # another team's
    with platform.client(api_key="lsk_0123456789abcdef_" + "x" * 43) as stranger:
        with pytest.raises(grpc.RpcError):
            stranger.start_audit(version.id, dataset.id, audit_pb2.AuditConfig())  # bad key

    with platform.client() as admin:
        events = admin.audit_events(limit=1000)
    rows = [(e.service, e.rpc.rsplit(".", 1)[-1], e.key_id, e.team, e.code, e.reason)
            for e in events]
    assert ("registry", "Registry/UploadModelVersion", a_id, "team-a", "OK", "") in rows
    assert ("registry", "Registry/SetAlias", a_id, "team-a", "OK", "") in rows
    assert ("estimator", "Estimator/StartAudit", a_id, "team-a", "OK", "") in rows
    assert ("registry", "Registry/DeleteModelVersion", auth.split_key(keys["a_reader"])[0],
            "team-a", "PERMISSION_DENIED", "role") in rows
    assert ("registry", "Registry/SetAlias", auth.split_key(keys["b"])[0], "team-b",
            "PERMISSION_DENIED", "other_team") in rows
    assert ("estimator", "Estimator/StartAudit", "0123456789abcdef", "", "UNAUTHENTICATED",
            "bad_key") in rows
    assert not any(r[1] == "Registry/ListModelVersions" for r in rows), "reads are not recorded"
    upload = next(e for e in events if e.rpc.endswith("UploadModelVersion") and e.key_id == a_id)
    assert "model_name=mlp" in upload.object and upload.result_id == version.id
    start = next(e for e in events if e.rpc.endswith("StartAudit") and e.code == "OK")
    assert start.result_id == job.id and version.id in start.object, start
    # Who, by name: alice's own calls and those of her audit's worker (its credential is hers).
    assert upload.user == start.user == "alice"
    report = next(e for e in events if e.rpc.endswith("PutReport"))
    assert (report.user, report.team) == ("alice", "team-a") and report.key_id != a_id
    times = [e.at.ToNanoseconds() for e in events]
    assert times == sorted(times, reverse=True)

    with platform.client() as admin:  # filters
        assert {e.team for e in admin.audit_events(team="team-b")} == {"team-b"}
        assert all(e.reason for e in admin.audit_events(denied_only=True))

    def denied(service: str, reason: str) -> float:
        return total(platform.metrics[service], "lambdascope_denied_calls_total", reason=reason)
    assert denied("registry", "role") >= 1 and denied("registry", "other_team") >= 1
    assert denied("estimator", "bad_key") >= 1


def test_every_writing_rpc_is_marked_and_writer_rpcs_all_write():
    """The `(writes)` option decides what the trail records: every RPC a writer key is needed
    for changes state, so each must carry it (an RPC added without it fails here)."""
    for _service, descriptor, method in _all_methods():
        access = auth.access_of(descriptor.full_name, method.name)
        if access == access_pb2.ACCESS_WRITER:
            assert auth.writes(descriptor.full_name, method.name), method.full_name
    assert auth.writes("lambdascope.v1.Identity", "RevokeKey")
    assert not auth.writes("lambdascope.v1.Registry", "GetModel")
    assert SERVICES  # the same RPC list the isolation matrix walks


def test_admin_log_prints_the_trail_and_refuses_non_admins(world):
    platform, keys = world["platform"], world["keys"]

    def cli(key: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lambdascope.cli", "admin", "log", *args,
                               "--server", platform.endpoints["registry"]],
                              env={"LAMBDASCOPE_API_KEY": key, "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=60)

    done = cli(platform.api_key, "--denied", "--since", "1h")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["TIME", "SERVICE", "TEAM"]
    assert any("PERMISSION_DENIED" in line and "role" in line for line in lines[1:]), done.stdout
    assert all("OK " not in line for line in lines[1:])
    refused = cli(keys["a"])
    assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr + refused.stdout
    # No secret of any key used is in the trail.
    with platform.client() as admin:
        text = str(admin.audit_events(limit=1000))
    for key in [*keys.values(), platform.api_key]:
        assert auth.split_key(key)[1] not in text
