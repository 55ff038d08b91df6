"""The boundary between teams, tried on every RPC of every service.

The RPCs come from the proto descriptors, so an RPC added later either gets a row in CROSSING
(what team B sends to reach team A's objects, and how it must be refused) or fails
`test_every_rpc_is_in_the_matrix`. Each refusal must leave the databases and the object store
exactly as they were.
"""
from __future__ import annotations

import hashlib
import pathlib
import sqlite3
import time

import grpc
import pytest
from google.protobuf import message_factory

from lambdascope import auth
from lambdascope.local import LocalPlatform
from lambdascope.v1 import (access_pb2, audit_pb2, estimator_pb2, identity_pb2, jobs_pb2, models_pb2,
                            platform_pb2, registry_pb2, trainer_pb2)

SERVICES = {"registry": [registry_pb2.DESCRIPTOR.services_by_name["Registry"],
                         identity_pb2.DESCRIPTOR.services_by_name["Identity"],
                         platform_pb2.DESCRIPTOR.services_by_name["Platform"]],
            "trainer": [trainer_pb2.DESCRIPTOR.services_by_name["Trainer"],
                        jobs_pb2.DESCRIPTOR.services_by_name["Jobs"]],
            "estimator": [estimator_pb2.DESCRIPTOR.services_by_name["Estimator"],
                          jobs_pb2.DESCRIPTOR.services_by_name["Jobs"]]}
NF, PD = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
OK = None  # answered, with nothing of team A's in it (checked by `leaks`)
SAMPLER = audit_pb2.SamplerConfig(chains=2, draws=40, burnin=20, step_size=1e-4,
                                  localization=100.0, seed=1)


def _all_methods():
    for service, descriptors in SERVICES.items():
        for descriptor in descriptors:
            for method in descriptor.methods:
                yield service, descriptor, method


def _name(service: str, descriptor, method) -> str:
    """The matrix's key: "Service/Method", with the server first for the Jobs service, which
    every job-running server hosts over its own jobs ("trainer:Jobs/GetJob")."""
    prefix = f"{service}:" if descriptor.name == "Jobs" else ""
    return f"{prefix}{descriptor.name}/{method.name}"


@pytest.fixture(scope="module")
def world(tmp_path_factory, regression_files):
    """A platform with teams A and B; A owns a model (versions, alias, tags), a dataset, an
    audit report, a training run; keys: A's writer, reader, revoked and expired, B's writer."""
    data_dir = tmp_path_factory.mktemp("teams")
    platform = LocalPlatform(data_dir)
    platform.start()
    try:
        with platform.client() as admin:
            for team in ("team-a", "team-b"):
                admin.create_team(team)
            keys = {name: admin.create_key(team, role).secret for name, team, role in (
                ("a", "team-a", auth.Role.ROLE_WRITER), ("a_reader", "team-a", auth.Role.ROLE_READER),
                ("a_revoked", "team-a", auth.Role.ROLE_WRITER),
                ("a_expired", "team-a", auth.Role.ROLE_WRITER),
                ("b", "team-b", auth.Role.ROLE_WRITER))}
            admin.revoke_key(auth.split_key(keys["a_revoked"])[0])
        with sqlite3.connect(data_dir / "registry.db") as db:  # expired an hour ago
            db.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?",
                       (time.time() - 3600, auth.split_key(keys["a_expired"])[0]))
        model_path, data_path = regression_files
        with platform.client(api_key=keys["a"]) as a:
            version = a.upload_model(model_path, "mlp", tags={"stage": "x"})
            dataset = a.upload_dataset(data_path, "reg")
            a.set_alias("mlp", "production", version.id)
            job = a.wait(a.start_audit(version.id, dataset.id, audit_pb2.AuditConfig(
                loss=models_pb2.LOSS_KIND_MSE, sampler=SAMPLER)).id)
            assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.message
            report = a.get_report(job.output_ids[0])
            training = a.wait(a.start_training(trainer_pb2.TrainSpec(
                model_name="digits", loss=models_pb2.LOSS_KIND_CROSS_ENTROPY, epochs=1,
                batch_size=64, seed=1,
                architecture=models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[64, 10])),
                dataset=trainer_pb2.DatasetSpec(builtin="digits", test_fraction=0.2),
                optimizer=trainer_pb2.OptimizerSpec(kind="adam", learning_rate=3e-3),
                checkpoints=trainer_pb2.CheckpointPolicy(count=2))).id)
            assert training.state == jobs_pb2.JOB_STATE_SUCCEEDED, training.message
            # The worker acted for team A: its checkpoints are A's.
            assert {a.get_model_version(v).owner for v in training.output_ids} == {"team-a"}
        yield {"platform": platform, "keys": keys, "version": version.id, "dataset": dataset.id,
               "report": report.id, "audit_job": job.id, "train_job": training.id,
               "data_dir": data_dir, "a_key_id": auth.split_key(keys["a"])[0]}
    finally:
        platform.stop()


def crossing(w: dict) -> dict[str, tuple]:
    """RPC -> (request: what B sends to reach A's objects, the refusal: a status code, or OK for
    an answer that must hold nothing of A's)."""
    r, v, ds = registry_pb2, w["version"], w["dataset"]
    tagged = r.ModelUploadHeader(model_name="mlp", format=models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT,
                                 sha256="0" * 64, size_bytes=1,
                                 lineage=r.Lineage(parent_version_id=v))
    audit = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE, sampler=SAMPLER)
    return {
        "Registry/CreateModel": (r.CreateModelRequest(name="mlp", description="B's own"), "own"),
        "Registry/GetModel": (r.GetModelRequest(name="mlp"), NF),
        "Registry/ListModels": (r.ListModelsRequest(), OK),
        "Registry/UploadModelVersion": ([r.UploadModelVersionRequest(header=tagged)], NF),
        "Registry/GetModelVersion": (r.GetModelVersionRequest(version_id=v), NF),
        "Registry/ListModelVersions": (r.ListModelVersionsRequest(model_name="mlp"), NF),
        "Registry/DownloadModelVersion": (r.DownloadModelVersionRequest(version_id=v), NF),
        "Registry/UploadDataset": ([r.UploadDatasetRequest(header=r.DatasetUploadHeader(
            name="reg", sha256="0" * 64, size_bytes=1))], "own"),
        "Registry/GetDataset": (r.GetDatasetRequest(dataset_id=ds), NF),
        "Registry/ListDatasets": (r.ListDatasetsRequest(name="reg"), OK),
        "Registry/DownloadDataset": (r.DownloadDatasetRequest(dataset_id=ds), NF),
        "Registry/SearchModelVersions": (r.SearchModelVersionsRequest(tags={"stage": "x"}), OK),
        "Registry/DeleteModelVersion": (r.DeleteModelVersionRequest(version_id=v), NF),
        "Registry/DeleteDataset": (r.DeleteDatasetRequest(dataset_id=ds), NF),
        "Registry/SetTags": (r.SetTagsRequest(version_id=v, set={"stage": "y"}), NF),
        "Registry/SetAlias": (r.SetAliasRequest(model_name="mlp", alias="production",
                                                version_id=v), NF),
        "Registry/DeleteAlias": (r.DeleteAliasRequest(model_name="mlp", alias="production"), NF),
        "Registry/ListAliases": (r.ListAliasesRequest(model_name="mlp"), NF),
        "Registry/GetAliasHistory": (r.GetAliasHistoryRequest(model_name="mlp",
                                                              alias="production"), NF),
        "Registry/GetDownloadUrl": (r.GetDownloadUrlRequest(version_id=v), NF),
        "Registry/CollectGarbage": (r.CollectGarbageRequest(), PD),
        "Registry/PutReport": (r.PutReportRequest(report=audit_pb2.AuditReport(
            model_version_id=v, dataset_id=ds)), NF),
        "Registry/GetReport": (r.GetReportRequest(report_id=w["report"]), NF),
        "Registry/GetReportPage": (r.GetReportRequest(report_id=w["report"]), NF),
        "Registry/ListReports": (r.ListReportsRequest(), OK),
        # Writes naming another team's record are refused whether or not it exists or was shared.
        "Registry/Share": (r.ShareRequest(model_name="team-a/mlp", team="team-b"), PD),
        "Registry/Unshare": (r.ShareRequest(model_name="team-a/mlp", team="team-b"), PD),
        "Registry/ListGrants": (r.ListGrantsRequest(), OK),
        # A job's files answer its own credential only (another job's: tests/.../test_job_state.py).
        "Registry/PutJobState": ([r.PutJobStateRequest(header=r.JobStateHeader(
            name="state.safetensors", sha256="0" * 64, size_bytes=1))], PD),
        "Registry/GetJobState": (r.GetJobStateRequest(name="state.safetensors"), PD),
        "Registry/DeleteJobState": (r.DeleteJobStateRequest(), PD),
        "Identity/WhoAmI": (identity_pb2.WhoAmIRequest(), OK),
        "Identity/CreateTeam": (identity_pb2.CreateTeamRequest(name="team-c"), PD),
        "Identity/ListTeams": (identity_pb2.ListTeamsRequest(), PD),
        "Identity/CreateKey": (identity_pb2.CreateKeyRequest(team="team-a",
                                                             role=auth.Role.ROLE_ADMIN), PD),
        "Identity/ListKeys": (identity_pb2.ListKeysRequest(team="team-a"), PD),
        "Identity/RevokeKey": (identity_pb2.RevokeKeyRequest(key_id=w["a_key_id"]), PD),
        "Identity/IssueJobCredential": (identity_pb2.IssueJobCredentialRequest(
            job_id="x", expires_seconds=60), "own"),
        "Platform/Describe": (platform_pb2.DescribeRequest(), OK),
        "Platform/ListAuditEvents": (platform_pb2.ListAuditEventsRequest(team="team-a"), PD),
        "Trainer/StartTraining": (trainer_pb2.StartTrainingRequest(spec=trainer_pb2.TrainSpec(
            model_name="stolen", loss=models_pb2.LOSS_KIND_MSE, epochs=1, batch_size=8,
            architecture=models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[3, 1])),
            dataset=trainer_pb2.DatasetSpec(dataset_id=ds),
            optimizer=trainer_pb2.OptimizerSpec(kind="adam", learning_rate=1e-3))), NF),
        "trainer:Jobs/GetJob": (jobs_pb2.GetJobRequest(job_id=w["train_job"]), NF),
        "trainer:Jobs/ListJobs": (jobs_pb2.ListJobsRequest(), OK),
        "trainer:Jobs/CancelJob": (jobs_pb2.CancelJobRequest(job_id=w["train_job"]), NF),
        "trainer:Jobs/WatchJob": (jobs_pb2.WatchJobRequest(job_id=w["train_job"]), NF),
        "Estimator/StartAudit": (estimator_pb2.StartAuditRequest(
            model_version_id=v, dataset_id=ds, config=audit), NF),
        "estimator:Jobs/GetJob": (jobs_pb2.GetJobRequest(job_id=w["audit_job"]), NF),
        "estimator:Jobs/ListJobs": (jobs_pb2.ListJobsRequest(), OK),
        "estimator:Jobs/CancelJob": (jobs_pb2.CancelJobRequest(job_id=w["audit_job"]), NF),
        "estimator:Jobs/WatchJob": (jobs_pb2.WatchJobRequest(job_id=w["audit_job"]), NF),
    }


def call(platform: LocalPlatform, service: str, method, request, key: str):
    """Call `method` of `service` with `key`: (status code, response or None, details)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    reply_type = message_factory.GetMessageClass(method.output_type)
    metadata = [("authorization", f"Bearer {key}")] if key else []
    with grpc.insecure_channel(platform.endpoints[service]) as channel:
        kind = (method.client_streaming, method.server_streaming)
        factory = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                   (True, False): channel.stream_unary, (True, True): channel.stream_stream}[kind]
        stub = factory(path, request_serializer=lambda m: m.SerializeToString(),
                       response_deserializer=reply_type.FromString)
        try:
            reply = stub(iter(request) if method.client_streaming else request,
                         metadata=metadata, timeout=20)
            if method.server_streaming:
                reply = list(reply)
            return grpc.StatusCode.OK, reply, ""
        except grpc.RpcError as exc:
            return exc.code(), None, exc.details() or ""


def leaks(reply, w: dict, sent: object = "") -> list[str]:
    """Team A's ids, names or key found in an answer given to team B (other than those B sent)."""
    text, sent = str(reply), str(sent)
    marks = [w["version"], w["dataset"], w["report"], w["audit_job"], w["train_job"],
             '"mlp"', "team-a", w["a_key_id"]]
    return [m for m in marks if m in text and m not in sent]


def snapshot(data_dir: pathlib.Path) -> dict:
    """Every row of the three services' databases and every stored object's digest, but the
    audit trail's (which records the refused calls: tests/integration/test_audit_trail.py)."""
    state = {}
    for db in sorted(data_dir.glob("*.db")):
        with sqlite3.connect(db) as conn:
            state[db.name] = [line for line in conn.iterdump() if '"audit_events"' not in line]
    objects = data_dir / "objects"
    state["objects"] = sorted((str(p.relative_to(objects)), hashlib.sha256(p.read_bytes()).hexdigest())
                              for p in objects.rglob("*") if p.is_file())
    return state


def test_every_rpc_is_in_the_matrix(world):
    named = {_name(*row) for row in _all_methods()}
    assert named == set(crossing(world)), "an RPC without a team-crossing case (add it)"


def test_team_b_cannot_reach_team_a_on_any_rpc(world):
    before = snapshot(world["data_dir"])
    for service, descriptor, method in _all_methods():
        request, expected = crossing(world)[_name(service, descriptor, method)]
        if expected == "own":  # creates in B's own team: tested in the test below
            continue
        code, reply, details = call(world["platform"], service, method, request, world["keys"]["b"])
        name = _name(service, descriptor, method)
        if expected is OK:
            assert code == grpc.StatusCode.OK, (name, code, details)
            assert leaks(reply, world) == [], (name, reply)
        else:
            assert code == expected, (name, code, details)
            assert leaks(details, world, sent=request) == [], (name, details)
    assert snapshot(world["data_dir"]) == before


def test_not_found_reads_the_same_for_another_teams_object_as_for_a_missing_one(world):
    """No existence leak through the error text either."""
    get = {_name(s, d, m): (s, m) for s, d, m in _all_methods()}
    service, method = get["Registry/GetModelVersion"]
    theirs = call(world["platform"], service, method, registry_pb2.GetModelVersionRequest(
        version_id=world["version"]), world["keys"]["b"])
    missing = call(world["platform"], service, method, registry_pb2.GetModelVersionRequest(
        version_id="mv-0000000000000000"), world["keys"]["b"])
    assert theirs[0] == missing[0] == NF
    assert theirs[2].replace(world["version"], "ID") == missing[2].replace("mv-0000000000000000", "ID")


@pytest.mark.parametrize("who", ["a_reader", "a_revoked", "a_expired", "none"])
def test_a_reader_cannot_write_and_bad_keys_cannot_call_anything(world, who):
    before = snapshot(world["data_dir"])
    key = "" if who == "none" else world["keys"][who]
    for service, descriptor, method in _all_methods():
        access = auth.access_of(descriptor.full_name, method.name)
        request, _ = crossing(world)[_name(service, descriptor, method)]
        if who == "a_reader" and access in (access_pb2.ACCESS_READER,
                                            access_pb2.ACCESS_AUTHENTICATED):
            continue  # a reader may read
        code, _, details = call(world["platform"], service, method, request, key)
        want = PD if who == "a_reader" else grpc.StatusCode.UNAUTHENTICATED
        assert code == want, (who, descriptor.name, method.name, code, details)
    assert snapshot(world["data_dir"]) == before


def test_names_are_per_team(world):
    """Team B's own `mlp` lives beside team A's, which stays as it was."""
    platform, keys = world["platform"], world["keys"]
    with platform.client(api_key=keys["a"]) as a:
        before = a.registry.GetModel(registry_pb2.GetModelRequest(name="mlp"))
    with platform.client(api_key=keys["b"]) as b:
        made = b.registry.CreateModel(registry_pb2.CreateModelRequest(name="mlp",
                                                                      description="B's own"))
        assert (made.name, made.owner, made.latest_version) == ("mlp", "team-b", 0)
        assert [m.name for m in b.registry.ListModels(registry_pb2.ListModelsRequest()).models] == ["mlp"]
    with platform.client(api_key=keys["a"]) as a:
        assert a.registry.GetModel(registry_pb2.GetModelRequest(name="mlp")) == before


def test_keys_are_never_stored_or_logged_in_clear(world):
    """The databases, the logs and the metrics of a platform that used every key hold none of
    them (admin.key, where `lambdascope up` keeps its own key for the CLI, aside)."""
    import urllib.request

    platform = world["platform"]
    secrets = [auth.split_key(k)[1] for k in [*world["keys"].values(), platform.api_key]]
    files = [p for p in world["data_dir"].rglob("*") if p.is_file() and p.name != "admin.key"]
    assert any(p.suffix == ".log" for p in files) and any(p.suffix == ".db" for p in files)
    texts = [p.read_bytes() for p in files]
    texts += [urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read()
              for address in platform.metrics.values()]
    for secret in secrets:
        assert not any(secret.encode() in text for text in texts)


def test_a_workers_credential_reaches_only_its_own_team(world, regression_files):
    """The credential a running audit's worker holds (taken here from the estimator's job
    record, where the service keeps it for the worker's restarts) acts for team B as a writer:
    it reads nothing of team A's, cannot mint keys, and stops working when the job ends."""
    platform, keys = world["platform"], world["keys"]
    model_path, data_path = regression_files
    with platform.client(api_key=keys["b"]) as b:
        version = b.upload_model(model_path, "worker-probe")
        dataset = b.upload_dataset(data_path, "worker-probe")
        long = audit_pb2.SamplerConfig(chains=2, draws=200_000, burnin=10, step_size=1e-4,
                                       localization=100.0, seed=1)
        job = b.start_audit(version.id, dataset.id, audit_pb2.AuditConfig(
            loss=models_pb2.LOSS_KIND_MSE, sampler=long))
        try:
            credential = ""
            deadline = time.monotonic() + 120
            while not credential and time.monotonic() < deadline:
                with sqlite3.connect(world["data_dir"] / "estimator.db") as db:
                    row = db.execute("SELECT credential FROM jobs WHERE id = ?", (job.id,)).fetchone()
                credential = row[0] if row else ""
                state = b.get_job(job.id).state
                assert state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING), state
                time.sleep(0.2)
            assert credential, "the running audit holds no credential"
            with platform.client(api_key=credential) as worker:
                me = worker.whoami()
                assert (me.team, me.role, me.job_id) == ("team-b", auth.Role.ROLE_WRITER, job.id)
                for reach in (lambda: worker.get_model_version(world["version"]),
                              lambda: worker.get_model_version("team-a/mlp@production"),
                              lambda: worker.get_dataset(world["dataset"]),
                              lambda: worker.get_report(world["report"]),
                              lambda: worker.get_job(world["audit_job"])):
                    with pytest.raises(grpc.RpcError) as refused:
                        reach()
                    assert refused.value.code() == NF, refused.value.details()
                for mint in (lambda: worker.issue_job_credential(job.id, 60),
                             lambda: worker.create_key("team-b", auth.Role.ROLE_ADMIN)):
                    with pytest.raises(grpc.RpcError) as refused:
                        mint()
                    assert refused.value.code() == PD, refused.value.details()
                assert worker.get_model_version(version.id).id == version.id  # its own team's
        finally:
            b.cancel_job(job.id)
        assert b.wait(job.id).state == jobs_pb2.JOB_STATE_CANCELLED
    with platform.client(api_key=credential) as worker:
        with pytest.raises(grpc.RpcError) as refused:
            worker.whoami()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
