"""Read-only grants between teams (Registry.Share): team A shares its model and dataset with
team B; B reads and audits them under the names "team-a/..." while every write answers
PERMISSION_DENIED and leaves A's records as they were; after `unshare` B is refused again with
the same NOT_FOUND a missing object gets. A third team never sees anything."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from lambdascope import auth
from lambdascope.local import LocalPlatform
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2, registry_pb2
from tests.integration.test_team_isolation import snapshot

SAMPLER = audit_pb2.SamplerConfig(chains=2, draws=40, burnin=20, step_size=1e-4,
                                  localization=100.0, seed=1)
AUDIT = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE, sampler=SAMPLER)


@pytest.fixture(scope="module")
def world(tmp_path_factory, regression_files):
    data_dir = tmp_path_factory.mktemp("sharing")
    platform = LocalPlatform(data_dir)
    platform.start()
    try:
        with platform.client() as admin:
            for team in ("team-a", "team-b", "team-c"):
                admin.create_team(team)
            keys = {name: admin.create_key(team, role).secret for name, team, role in (
                ("a", "team-a", auth.Role.ROLE_WRITER), ("b", "team-b", auth.Role.ROLE_WRITER),
                ("b_reader", "team-b", auth.Role.ROLE_READER),
                ("c", "team-c", auth.Role.ROLE_WRITER))}
        model_path, data_path = regression_files
        with platform.client(api_key=keys["a"]) as a:
            version = a.upload_model(model_path, "mlp", tags={"stage": "x"})
            dataset = a.upload_dataset(data_path, "reg")
            a.set_alias("mlp", "production", version.id)
        yield {"platform": platform, "keys": keys, "version": version.id, "dataset": dataset.id,
               "data_dir": data_dir}
    finally:
        platform.stop()


def client(world, who: str):
    return world["platform"].client(api_key=world["keys"][who])


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def a_records(world) -> dict:
    """Team A's model, versions (tags, aliases), dataset, as A sees them."""
    with client(world, "a") as a:
        return {"model": a.registry.GetModel(registry_pb2.GetModelRequest(name="mlp")),
                "versions": list(a.list_model_versions("mlp")),
                "aliases": a.registry.ListAliases(registry_pb2.ListAliasesRequest(model_name="mlp")),
                "dataset": a.get_dataset(world["dataset"])}


def test_a_grant_lets_b_read_and_audit_and_writes_stay_refused(world):
    v, ds = world["version"], world["dataset"]
    with client(world, "b") as b:  # nothing shared yet: as if it did not exist
        for ref in ("team-a/mlp@production", v):
            assert code_of(lambda: b.get_model_version(ref))[0] == grpc.StatusCode.NOT_FOUND
    with client(world, "a") as a:
        grant = a.share("team-b", model="mlp")
        assert (grant.model_name, grant.owner, grant.grantee) == ("mlp", "team-a", "team-b")
        assert a.share("team-b", model="mlp") == grant  # sharing again changes nothing
        a.share("team-b", dataset="reg")
    before = a_records(world)

    with client(world, "b") as b:
        model = b.registry.GetModel(registry_pb2.GetModelRequest(name="team-a/mlp"))
        assert (model.name, model.owner, model.latest_version) == ("team-a/mlp", "team-a", 1)
        assert "team-a/mlp" in [m.name for m in b.registry.ListModels(
            registry_pb2.ListModelsRequest()).models]
        for ref in ("team-a/mlp@production", "team-a/mlp/1", "team-a/mlp/latest", v):
            got = b.get_model_version(ref)
            assert (got.id, got.model_name, got.owner) == (v, "team-a/mlp", "team-a"), ref
        assert [x.id for x in b.list_model_versions("team-a/mlp")] == [v]
        assert [x.id for x in b.search_model_versions(model_name="team-a/mlp",
                                                      alias="production")] == [v]
        assert b.get_dataset(ds).name == "team-a/reg"
        assert [d.id for d in b.list_datasets("team-a/reg")] == [ds]
        job = b.wait(b.start_audit("team-a/mlp@production", ds, AUDIT).id)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.message
        report = b.get_report(job.output_ids[0])
        assert report.model_version_id == v
        assert [r.id for r in b.list_reports(v)] == [report.id]

    with client(world, "a") as a:  # the report is B's: A does not see it
        assert code_of(lambda: a.get_report(report.id))[0] == grpc.StatusCode.NOT_FOUND
        assert list(a.list_reports(v)) == []

    stored = snapshot(world["data_dir"])
    header = registry_pb2.ModelUploadHeader(model_name="team-a/mlp", sha256="0" * 64, size_bytes=1,
                                            format=models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT)
    with client(world, "b") as b:
        r = b.registry
        writes = {
            "delete version": lambda: b.delete_model_version(v),
            "delete by alias": lambda: b.delete_model_version("team-a/mlp@production"),
            "tag version": lambda: b.set_tags(version_id=v, set={"stage": "y"}),
            "set alias": lambda: b.set_alias("team-a/mlp", "production", v),
            "delete alias": lambda: b.delete_alias("team-a/mlp", "production"),
            "upload": lambda: r.UploadModelVersion(iter([registry_pb2.UploadModelVersionRequest(
                header=header)])),
            "delete dataset": lambda: b.delete_dataset(ds),
            "tag dataset": lambda: b.set_tags(dataset_id=ds, set={"k": "v"}),
            "reshare": lambda: b.share("team-c", model="team-a/mlp"),
            "unshare": lambda: b.unshare("team-b", model="team-a/mlp"),
        }
        for what, write in writes.items():
            code, details = code_of(write)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (what, code, details)
            assert "read-only" in details, (what, details)
    assert snapshot(world["data_dir"]) == stored
    assert a_records(world) == before

    with client(world, "c") as c:  # a grant is for one team
        assert code_of(lambda: c.get_model_version(v))[0] == grpc.StatusCode.NOT_FOUND
        assert "team-a/mlp" not in str(c.registry.ListModels(registry_pb2.ListModelsRequest()))

    with client(world, "a") as a:
        assert a.unshare("team-b", model="mlp").grantee == "team-b"
    with client(world, "b") as b:
        for ref, missing in ((v, "mv-0000000000000000"),
                             ("team-a/mlp@production", "team-a/nothing@production")):
            theirs, none = code_of(lambda: b.get_model_version(ref)), \
                code_of(lambda: b.get_model_version(missing))
            assert theirs[0] == none[0] == grpc.StatusCode.NOT_FOUND
            assert theirs[1].replace(ref, "X").replace("mlp", "nothing") == \
                none[1].replace(missing, "X")
        assert code_of(lambda: b.start_audit(v, ds, AUDIT))[0] == grpc.StatusCode.NOT_FOUND
        assert b.get_report(report.id).id == report.id  # B's report stays B's
        # The dataset grant is separate and still holds until it is withdrawn too.
        assert b.get_dataset(ds).id == ds
    with client(world, "a") as a:
        a.unshare("team-b", dataset="reg")
    with client(world, "b") as b:
        assert code_of(lambda: b.get_dataset(ds))[0] == grpc.StatusCode.NOT_FOUND


def test_only_the_owner_writers_share_and_bad_requests_are_explained(world):
    with client(world, "a") as a:
        cases = {
            "no such team": (lambda: a.share("team-z", model="mlp"), grpc.StatusCode.NOT_FOUND,
                             "no team named 'team-z'"),
            "own team": (lambda: a.share("team-a", model="mlp"),
                         grpc.StatusCode.INVALID_ARGUMENT, "owns model 'mlp' already"),
            "no such model": (lambda: a.share("team-b", model="nope"), grpc.StatusCode.NOT_FOUND,
                              "no model named 'nope'"),
            "not shared": (lambda: a.unshare("team-c", model="mlp"), grpc.StatusCode.NOT_FOUND,
                           "not shared with team 'team-c'"),
            "no target": (lambda: a.registry.Share(registry_pb2.ShareRequest(team="team-b")),
                          grpc.StatusCode.INVALID_ARGUMENT, "model_name or the dataset_name"),
        }
        for what, (call, want, text) in cases.items():
            code, details = code_of(call)
            assert code == want and text in details, (what, code, details)
    with client(world, "b_reader") as reader:
        code, _ = code_of(lambda: reader.share("team-a", model="anything"))
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_cli_share_unshare_and_grants(world):
    platform = world["platform"]
    env = {"LAMBDASCOPE_API_KEY": world["keys"]["a"], "PATH": "/usr/bin:/bin"}

    def cli(*args: str, ok: tuple[int, ...] = (0,)) -> str:
        done = subprocess.run([sys.executable, "-m", "lambdascope.cli", *args, "--server",
                               platform.endpoints["registry"]], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode in ok, done.stderr
        return done.stdout + done.stderr

    out = cli("share", "mlp", "--with", "team-c")
    assert "shared with team team-c" in out and "team-a/mlp" in out
    cli("share", "reg", "--with", "team-c", "--dataset")
    env["LAMBDASCOPE_API_KEY"] = world["keys"]["c"]  # team C audits A's model as the README shows
    # A run this short may be judged untrustworthy (exit 3); that it ran on A's model is the point.
    out = cli("audit", "--model-version", "team-a/mlp@production", "--dataset", world["dataset"],
              "--loss", "mse", "--chains", "2", "--draws", "40", "--burnin", "20", "--seed", "1",
              ok=(0, 3))
    assert "succeeded" in out, out
    env["LAMBDASCOPE_API_KEY"] = world["keys"]["a"]
    cli("unshare", "reg", "--with", "team-c", "--dataset")
    assert any(line.split()[:4] == ["model", "mlp", "team-a", "team-c"]
               for line in cli("grants").splitlines())
    assert "no longer shared" in cli("unshare", "mlp", "--with", "team-c")
    assert "team-c" not in cli("grants")


def test_deleting_a_version_other_teams_audited_is_refused_unless_said(world, regression_files):
    """B's audit of A's shared version is B's: A's delete must not take it silently."""
    with client(world, "a") as a:
        version = a.upload_model(regression_files[0], "mlp").id
        a.share("team-b", model="mlp")
        a.share("team-b", dataset="reg")
        own = a.wait(a.start_audit(version, world["dataset"], AUDIT).id)
        assert own.state == jobs_pb2.JOB_STATE_SUCCEEDED, own.message
    with client(world, "b") as b:
        job = b.wait(b.start_audit(version, world["dataset"], AUDIT).id)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.message
        theirs = job.output_ids[0]
    with client(world, "a") as a:
        a.unshare("team-b", model="mlp")  # the report outlives the grant
        a.unshare("team-b", dataset="reg")
        code, details = code_of(lambda: a.delete_model_version(version))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert "1 audit report of other teams (team-b)" in details and "delete_other_teams_reports" in details
        assert a.get_model_version(version).id == version  # refused: nothing deleted
        assert [r.id for r in a.list_reports(version)] == [own.output_ids[0]]
    with client(world, "b") as b:
        assert b.get_report(theirs).model_version_id == version
    with client(world, "a") as a:
        a.delete_model_version(version, other_teams_reports=True)
        assert code_of(lambda: a.get_model_version(version))[0] == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: a.get_report(own.output_ids[0]))[0] == grpc.StatusCode.NOT_FOUND
    with client(world, "b") as b:
        assert code_of(lambda: b.get_report(theirs))[0] == grpc.StatusCode.NOT_FOUND


def test_a_dataset_other_teams_trained_on_is_not_deleted_and_their_version_ids_stay_theirs(world, regression_files):
    """A dataset in another team's lineage is kept, and its owner learns how many of that team's
    versions use it, not their ids (which would leak the other team's registry)."""
    with client(world, "a") as a:
        a.share("team-b", dataset="reg")
        mine = a.upload_model(regression_files[0], "on-reg",
                              lineage=registry_pb2.Lineage(dataset_version_id=world["dataset"])).id
    with client(world, "b") as b:
        theirs = [b.upload_model(regression_files[0], "on-a-data",
                                 lineage=registry_pb2.Lineage(dataset_version_id=world["dataset"])).id
                  for _ in range(2)]
    with client(world, "a") as a:
        code, details = code_of(lambda: a.delete_dataset(world["dataset"]))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert mine in details and "2 model versions of other teams (team-b: 2;" in details, details
        assert not any(v in details for v in theirs), details
        assert a.get_dataset(world["dataset"]).id == world["dataset"]  # refused: nothing deleted
        a.delete_model_version(mine)
    with client(world, "b") as b:
        for v in theirs:
            b.delete_model_version(v)
    with client(world, "a") as a:
        a.unshare("team-b", dataset="reg")
        assert a.get_dataset(world["dataset"]).id == world["dataset"]
