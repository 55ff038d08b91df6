"""The registry on both backend pairs: (SQLite, local directory) and (PostgreSQL, S3 on moto).

Every test here runs once per pair against a real registry process; nothing is mocked.
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import subprocess
import sys
import textwrap
import time
import urllib.request

import grpc
import pytest
import torch
from safetensors.torch import save_file

from lambdascope import auth
from lambdascope.client import Client, file_digest
from lambdascope.v1 import models_pb2, registry_pb2
from registry_backend import BACKENDS, registry_backend
from s3server import MotoS3

ARCH = models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[4, 3, 2]))


@pytest.fixture(scope="module")
def s3_endpoint():
    with MotoS3() as endpoint:
        yield endpoint


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, s3_endpoint, tmp_path_factory):
    with registry_backend(request.param, tmp_path_factory.mktemp(request.param), s3_endpoint,
                          LAMBDASCOPE_STAGING_TTL_SECONDS="2") as b:
        yield b


@pytest.fixture
def client(backend):
    with backend.client() as c:
        yield c


def weights(path: pathlib.Path, seed: int) -> pathlib.Path:
    gen = torch.Generator().manual_seed(seed)
    save_file({"layers.0.weight": torch.randn(3, 4, generator=gen),
               "layers.0.bias": torch.randn(3, generator=gen),
               "layers.1.weight": torch.randn(2, 3, generator=gen),
               "layers.1.bias": torch.randn(2, generator=gen)}, str(path))
    return path


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("the call succeeded")


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns() % 10**9}"


def test_the_same_artifact_uploaded_twice_is_stored_once(backend, client, tmp_path):
    path = weights(tmp_path / "w.safetensors", seed=1)
    before = backend.content_keys()
    a = client.upload_model(path, unique("dedup-a"), architecture=ARCH)
    b = client.upload_model(path, unique("dedup-b"), architecture=ARCH)
    assert a.id != b.id and a.sha256 == b.sha256
    added = sorted(set(backend.content_keys()) - set(before))
    assert added == [f"sha256/{a.sha256[:2]}/{a.sha256}"]


def test_deleting_a_version_frees_its_bytes_only_when_nothing_else_shares_them(
        backend, client, tmp_path):
    shared = weights(tmp_path / "shared.safetensors", seed=2)
    name = unique("shared")
    first = client.upload_model(shared, name, architecture=ARCH)
    second = client.upload_model(shared, name, architecture=ARCH)
    key = f"sha256/{first.sha256[:2]}/{first.sha256}"
    assert client.delete_model_version(first.id) is False  # the second still uses the bytes
    assert key in backend.content_keys()
    back = client.download_model_version(second.id, tmp_path / "back.safetensors")
    assert file_digest(back)[0] == second.sha256
    assert client.delete_model_version(f"{name}/latest") is True
    assert key not in backend.content_keys()
    code, _ = code_of(client.get_model_version, second.id)
    assert code == grpc.StatusCode.NOT_FOUND


def test_aliases_resolve_everywhere_and_keep_their_history(backend, client, tmp_path):
    name = unique("aliased")
    versions = [client.upload_model(weights(tmp_path / f"{i}.safetensors", seed=10 + i), name,
                                    architecture=ARCH) for i in range(3)]
    client.set_alias(name, "production", versions[0].id)
    client.set_alias(name, "production", f"{name}/2")
    moved = client.set_alias(name, "production", f"{name}/latest")
    assert moved.version_id == versions[2].id and moved.version == 3
    history = client.alias_history(name, "production")
    assert [(e.from_version_id, e.to_version_id) for e in history] == [
        ("", versions[0].id), (versions[0].id, versions[1].id), (versions[1].id, versions[2].id)]
    assert client.get_model_version(f"{name}@production").id == versions[2].id
    assert list(client.get_model_version(versions[2].id).aliases) == ["production"]
    assert client.get_model_version(f"{name}/1").id == versions[0].id
    back = client.download_model_version(f"{name}@production", tmp_path / "prod.safetensors")
    assert file_digest(back)[0] == versions[2].sha256
    code, message = code_of(client.delete_model_version, f"{name}@production")
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "production" in message
    client.delete_alias(name, "production")
    assert len(client.alias_history(name, "production")) == 4
    code, _ = code_of(client.get_model_version, f"{name}@production")
    assert code == grpc.StatusCode.NOT_FOUND


def test_search_by_tags_alias_lineage_and_time_with_stable_pages(backend, client, tmp_path):
    name = unique("searched")
    data = tmp_path / "d.safetensors"
    save_file({"x": torch.randn(8, 4), "y": torch.randn(8, 2)}, str(data))
    dataset = client.upload_dataset(data, unique("train-data"), tags={"split": "train"})
    assert dataset.version == 1 and dict(dataset.tags) == {"split": "train"}
    made = []
    for i in range(7):
        lineage = registry_pb2.Lineage(job_id="train-job1", step=i,
                                       parent_version_id=made[-1].id if made else "",
                                       dataset_version_id=dataset.id)
        made.append(client.upload_model(weights(tmp_path / f"s{i}.safetensors", seed=100 + i),
                                        name, architecture=ARCH, lineage=lineage,
                                        tags={"parity": "even" if i % 2 == 0 else "odd"}))
    client.set_tags(version_id=made[3].id, set={"best": "yes"})
    client.set_alias(name, "candidate", made[5].id)
    assert [v.id for v in client.search_model_versions(model_name=name, page_size=2)] == \
        [v.id for v in made]
    newest = list(client.search_model_versions(model_name=name, newest_first=True, page_size=3))
    assert [v.id for v in newest] == [v.id for v in reversed(made)]
    even = list(client.search_model_versions(model_name=name, tags={"parity": "even"}))
    assert [v.lineage.step for v in even] == [0, 2, 4, 6]
    assert [v.id for v in client.search_model_versions(tag_keys=["best"],
                                                       model_name=name)] == [made[3].id]
    assert [v.id for v in client.search_model_versions(model_name=name,
                                                       alias="candidate")] == [made[5].id]
    assert [v.id for v in client.search_model_versions(
        parent_version_id=made[1].id)] == [made[2].id]
    by_data = list(client.search_model_versions(dataset_version_id=dataset.id))
    assert len(by_data) == 7
    after = made[4].created_at
    later = list(client.search_model_versions(model_name=name, created_after=after))
    assert [v.id for v in later] == [v.id for v in made[5:]]
    # a page token belongs to its query
    first = client.registry.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(
        model_name=name, page_size=2))
    code, message = code_of(client.registry.SearchModelVersions,
                            registry_pb2.SearchModelVersionsRequest(
                                model_name=name, tags={"parity": "odd"}, page_size=2,
                                page_token=first.next_page_token))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "another query" in message


def test_search_by_tags_alone_walks_pages_in_creation_order(backend, client, tmp_path):
    """Without a model name a tag search is driven by the tag index (key, value, created_at):
    pages, both orders, a second tag, a time bound and tags set after the upload all hold."""
    sweep = unique("sweep")
    made = [client.upload_model(weights(tmp_path / f"t{i}.safetensors", seed=300 + i),
                                unique(f"swept{i % 2}"), architecture=ARCH,
                                tags={"sweep": sweep, "arm": "ab"[i % 3 == 0]})
            for i in range(7)]

    def ids(**query):
        return [v.id for v in client.search_model_versions(**query)]

    assert ids(tags={"sweep": sweep}, page_size=2) == [v.id for v in made]
    assert ids(tags={"sweep": sweep}, newest_first=True, page_size=3) == \
        [v.id for v in reversed(made)]
    assert ids(tags={"sweep": sweep, "arm": "b"}, page_size=1) == \
        [made[i].id for i in (0, 3, 6)]
    assert ids(tags={"arm": "a", "sweep": sweep}) == [made[i].id for i in (1, 2, 4, 5)]
    assert ids(tags={"sweep": sweep}, created_after=made[4].created_at) == \
        [v.id for v in made[5:]]
    assert ids(tags={"sweep": sweep}, created_before=made[2].created_at, newest_first=True) == \
        [made[1].id, made[0].id]
    client.set_tags(version_id=made[5].id, set={"picked": "yes"})
    client.set_tags(version_id=made[2].id, set={"picked": "yes"})
    assert ids(tags={"sweep": sweep}, tag_keys=["picked"]) == [made[2].id, made[5].id]
    picked = list(client.search_model_versions(tags={"picked": "yes", "sweep": sweep}))
    assert [v.id for v in picked] == [made[2].id, made[5].id]
    assert dict(picked[1].tags) == {"sweep": sweep, "arm": "a", "picked": "yes"}


def test_fifty_concurrent_uploads_of_distinct_models_all_commit(backend, tmp_path):
    prefix = unique("many")
    paths = [weights(tmp_path / f"m{i}.safetensors", seed=1000 + i) for i in range(50)]

    def upload(i: int) -> str:
        with backend.client() as c:
            return c.upload_model(paths[i], f"{prefix}-{i:02d}", architecture=ARCH).id

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(upload, range(50)))
    assert len(set(ids)) == 50
    with backend.client() as c:
        listed = {m.name for m in _all_models(c) if m.name.startswith(prefix)}
        assert listed == {f"{prefix}-{i:02d}" for i in range(50)}
        assert all(c.get_model_version(f"{prefix}-{i:02d}/1").id == ids[i] for i in range(50))


def test_an_upload_repeated_under_its_request_id_makes_one_record(backend, client, tmp_path):
    """A retry (same request id, same header) answers with the first upload's record without
    reading its bytes again; the id reused for another upload is ALREADY_EXISTS; ids are per
    team."""
    name, data_name, rid = unique("retried"), unique("retried-data"), unique("request")
    path = weights(tmp_path / "w.safetensors", seed=21)
    first = client.upload_model(path, name, architecture=ARCH, tags={"stage": "a"}, request_id=rid)
    again = client.upload_model(path, name, architecture=ARCH, tags={"stage": "a"}, request_id=rid)
    assert again.id == first.id and again.version == 1 and dict(again.tags) == {"stage": "a"}
    # the header alone is answered: the bytes of a repeat are not needed
    sha, size = file_digest(path)
    header = registry_pb2.ModelUploadHeader(
        model_name=name, format=models_pb2.ARTIFACT_FORMAT_SAFETENSORS, architecture=ARCH,
        tags={"stage": "a"}, sha256=sha, size_bytes=size, request_id=rid)
    assert client.registry.UploadModelVersion(
        iter([registry_pb2.UploadModelVersionRequest(header=header)])).id == first.id
    other = weights(tmp_path / "other.safetensors", seed=22)
    for args in ((other, name), (path, unique("renamed"))):  # other bytes, another name
        code, details = code_of(client.upload_model, *args, architecture=ARCH, request_id=rid)
        assert code == grpc.StatusCode.ALREADY_EXISTS and rid in details and first.id in details, details
    assert [v.id for v in client.list_model_versions(name)] == [first.id]
    # datasets keep their own request ids, retried alike
    data_path = regression_file(tmp_path / "d.safetensors")
    dataset = client.upload_dataset(data_path, data_name, request_id=rid)
    assert client.upload_dataset(data_path, data_name, request_id=rid).id == dataset.id
    assert [d.id for d in client.list_datasets(data_name)] == [dataset.id]
    # another team's same request id is its own upload
    with backend.client() as admin:
        admin.create_team(team := unique("team"))
        secret = admin.create_key(team, auth.Role.ROLE_WRITER).secret
    with Client(registry=backend.address, api_key=secret) as theirs:
        mine = theirs.upload_model(path, name, architecture=ARCH, tags={"stage": "a"}, request_id=rid)
        assert mine.id != first.id and mine.owner == team


def test_concurrent_repeats_of_one_upload_make_one_version(backend, tmp_path):
    name, rid = unique("raced"), unique("request")
    path = weights(tmp_path / "w.safetensors", seed=23)

    def upload(_: int) -> str:
        with backend.client() as c:
            return c.upload_model(path, name, architecture=ARCH, request_id=rid).id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(upload, range(8)))
    with backend.client() as c:
        assert [v.id for v in c.list_model_versions(name)] == list(ids)


def test_an_upload_waits_out_a_registry_restart(backend, tmp_path):
    """The SDK streams an upload again while the registry is down, and it lands once."""
    name = unique("restarted")
    path = regression_file(tmp_path / "d.safetensors")
    backend.kill()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool, \
                Client(registry=backend.address, api_key=backend.api_key, timeout=60) as c:
            pending = pool.submit(c.upload_dataset, path, name)
            time.sleep(1.0)
            assert not pending.done()  # still trying
            backend.restart()
            dataset = pending.result(60)
    finally:
        if "registry" not in backend.platform.procs:
            backend.restart()
    with backend.client() as c:
        assert [d.id for d in c.list_datasets(name)] == [dataset.id]


def regression_file(path: pathlib.Path) -> pathlib.Path:
    save_file({"x": torch.randn(64, 4), "y": torch.randn(64, 1)}, str(path))
    return path


def _all_models(client) -> list[registry_pb2.Model]:
    request, out = registry_pb2.ListModelsRequest(page_size=17), []
    while True:
        page = client.registry.ListModels(request)
        out.extend(page.models)
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token


@pytest.mark.parametrize("corrupt", ["sha256", "truncated-safetensors", "bad-pt2"])
def test_corrupt_uploads_are_rejected_and_leave_nothing(backend, client, tmp_path, corrupt):
    name = unique(f"corrupt-{corrupt}")
    before = backend.content_keys()
    path = weights(tmp_path / "w.safetensors", seed=7)
    if corrupt == "sha256":
        header = registry_pb2.ModelUploadHeader(
            model_name=name, format=models_pb2.ARTIFACT_FORMAT_SAFETENSORS, architecture=ARCH,
            sha256="0" * 64, size_bytes=path.stat().st_size)
        messages = [registry_pb2.UploadModelVersionRequest(header=header),
                    registry_pb2.UploadModelVersionRequest(chunk=path.read_bytes())]
        code, _ = code_of(client.registry.UploadModelVersion, iter(messages))
        assert code == grpc.StatusCode.DATA_LOSS
    else:
        if corrupt == "truncated-safetensors":
            path.write_bytes(path.read_bytes()[:-20])
        else:
            path = tmp_path / "m.pt2"
            path.write_bytes(b"PK\x03\x04 this is not a torch.export archive")
        code, _ = code_of(client.upload_model, path, name,
                          architecture=ARCH if corrupt != "bad-pt2" else None)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(client.registry.GetModel, registry_pb2.GetModelRequest(name=name))
    assert code == grpc.StatusCode.NOT_FOUND
    assert backend.content_keys() == before
    assert backend.staging_files() == []


def test_a_client_that_dies_mid_upload_leaves_no_version_and_no_staging(backend, tmp_path):
    name = unique("died")
    script = textwrap.dedent(f"""
        import os, sys, time
        from lambdascope.client import Client
        from lambdascope.v1 import models_pb2, registry_pb2
        header = registry_pb2.ModelUploadHeader(
            model_name={name!r}, format=models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT,
            sha256="a" * 64, size_bytes=64 << 20)
        def stream():
            yield registry_pb2.UploadModelVersionRequest(header=header)
            for i in range(64):
                yield registry_pb2.UploadModelVersionRequest(chunk=os.urandom(1 << 20))
                if i == 8:
                    print("sent", flush=True)
                    time.sleep(60)
        Client(registry={backend.address!r}, api_key={backend.api_key!r}).registry.UploadModelVersion(stream())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"sent"
    deadline = time.monotonic() + 10
    while not backend.staging_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.staging_files(), "the upload was not being staged"
    proc.kill()
    proc.wait()
    with backend.client() as c:
        deadline = time.monotonic() + 10  # the server sees the broken stream and cleans up
        while backend.staging_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        c.collect_garbage()
        assert backend.staging_files() == []
        code, _ = code_of(c.registry.GetModel, registry_pb2.GetModelRequest(name=name))
        assert code == grpc.StatusCode.NOT_FOUND


def test_a_registry_that_crashes_mid_upload_leaves_staging_the_collector_removes(
        backend, tmp_path):
    """Killed mid-upload, the registry cannot clean up; after its restart the collector removes
    the abandoned staging file once it is older than the staging TTL (2 s here)."""
    name = unique("crashed")
    script = textwrap.dedent(f"""
        import os, time
        from lambdascope.client import Client
        from lambdascope.v1 import models_pb2, registry_pb2
        header = registry_pb2.ModelUploadHeader(
            model_name={name!r}, format=models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT,
            sha256="b" * 64, size_bytes=16 << 20)
        def stream():
            yield registry_pb2.UploadModelVersionRequest(header=header)
            yield registry_pb2.UploadModelVersionRequest(chunk=os.urandom(1 << 20))
            print("sent", flush=True)
            time.sleep(60)
        try:
            Client(registry={backend.address!r}, api_key={backend.api_key!r}).registry.UploadModelVersion(stream())
        except Exception:
            pass
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"sent"
        deadline = time.monotonic() + 10
        while not backend.staging_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.staging_files()
        backend.kill()
    finally:
        proc.kill()
        proc.wait()
    left = backend.staging_files()
    assert left, "a killed registry cannot have cleaned its staging"
    backend.restart()
    with backend.client() as c:
        removed = c.collect_garbage().staging_removed  # may already be older than the TTL
        if not removed:
            assert backend.staging_files() == left  # young files are left alone
            time.sleep(2.5)
            removed = c.collect_garbage().staging_removed
        assert removed == len(left)
        assert backend.staging_files() == []
        code, _ = code_of(c.registry.GetModel, registry_pb2.GetModelRequest(name=name))
        assert code == grpc.StatusCode.NOT_FOUND


def test_the_collector_removes_bytes_no_record_references(backend, client, tmp_path):
    """Bytes in the store that no record knows (a crash between storing and committing) go
    once they are older than the staging TTL; referenced bytes stay."""
    kept = client.upload_model(weights(tmp_path / "kept.safetensors", seed=77), unique("kept"),
                               architecture=ARCH)
    orphan = tmp_path / "orphan.bin"
    orphan.write_bytes(b"nobody references these bytes")
    sha = file_digest(orphan)[0]
    backend.objects().put_file(f"sha256/{sha[:2]}/{sha}", orphan)
    assert client.collect_garbage(dry_run=True).objects_removed == 0  # too young yet
    time.sleep(2.5)
    dry = client.collect_garbage(dry_run=True)
    assert f"sha256/{sha[:2]}/{sha}" in dry.removed_keys
    assert f"sha256/{sha[:2]}/{sha}" in backend.content_keys()
    done = client.collect_garbage()
    assert f"sha256/{sha[:2]}/{sha}" in done.removed_keys
    keys = backend.content_keys()
    assert f"sha256/{sha[:2]}/{sha}" not in keys
    assert f"sha256/{kept.sha256[:2]}/{kept.sha256}" in keys


def test_presigned_download_url(backend, client, tmp_path):
    path = weights(tmp_path / "url.safetensors", seed=5)
    version = client.upload_model(path, unique("url"), architecture=ARCH)
    request = registry_pb2.GetDownloadUrlRequest(version_id=version.id, expires_seconds=120)
    if backend.kind == "sqlite-local":
        code, message = code_of(client.registry.GetDownloadUrl, request)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "DownloadModelVersion" in message
        return
    url = client.registry.GetDownloadUrl(request)
    assert url.sha256 == version.sha256 and url.size_bytes == path.stat().st_size
    with urllib.request.urlopen(url.url, timeout=10) as response:
        assert response.read() == path.read_bytes()


def registry_download_bytes(backend) -> float:
    """The registry's count of bytes it sent through DownloadModelVersion/DownloadDataset."""
    text = urllib.request.urlopen(f"http://{backend.platform.metrics['registry']}/metrics",
                                  timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith('lambdascope_registry_transferred_bytes_total{direction="download"}'):
            return float(line.rpartition(" ")[2])
    raise AssertionError("no download counter in the registry's metrics")


def test_sdk_downloads_go_straight_to_s3_when_the_registry_hands_out_urls(
        backend, client, tmp_path):
    """via="auto" (the default) takes a presigned URL on S3 (the registry sends no bytes) and
    the registry's stream on a local directory; both check size and sha256."""
    path = weights(tmp_path / "fetch.safetensors", seed=6)
    version = client.upload_model(path, unique("fetch"), architecture=ARCH)
    data = tmp_path / "fetch-data.safetensors"
    save_file({"x": torch.randn(6, 4), "y": torch.randn(6, 2)}, str(data))
    dataset = client.upload_dataset(data, unique("fetch-data"))
    sent = registry_download_bytes(backend)
    got = client.download_model_version(version.id, tmp_path / "auto.safetensors")
    got_data = client.download_dataset(dataset.id, tmp_path / "auto-data.safetensors")
    assert got.read_bytes() == path.read_bytes() and got_data.read_bytes() == data.read_bytes()
    relayed = registry_download_bytes(backend) - sent
    if backend.kind == "sqlite-local":
        assert relayed == path.stat().st_size + data.stat().st_size
        with pytest.raises(grpc.RpcError) as refused:
            client.download_model_version(version.id, tmp_path / "url.safetensors", via="url")
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert not (tmp_path / "url.safetensors").exists()
    else:
        assert relayed == 0
        streamed = client.download_model_version(version.id, tmp_path / "s.safetensors",
                                                 via="stream")
        assert streamed.read_bytes() == path.read_bytes()
        assert registry_download_bytes(backend) - sent == path.stat().st_size
    with pytest.raises(ValueError, match="via must be"):
        client.download_model_version(version.id, tmp_path / "x", via="ftp")


def test_a_download_url_that_serves_other_bytes_leaves_nothing(backend, client, tmp_path):
    """The presigned download is checked against the registry's record like the stream."""
    if backend.kind == "sqlite-local":
        pytest.skip("a local directory hands out no URLs")
    path = weights(tmp_path / "swap.safetensors", seed=8)
    version = client.upload_model(path, unique("swap"), architecture=ARCH)
    other = weights(tmp_path / "other.safetensors", seed=9)
    # The same key holding other bytes: what a tampered or damaged bucket serves.
    store, key = backend.objects(), f"sha256/{version.sha256[:2]}/{version.sha256}"
    store.delete(key)
    store.put_file(key, other)
    with pytest.raises(OSError, match="corrupt"):
        client.download_model_version(version.id, tmp_path / "got.safetensors", via="url")
    assert not (tmp_path / "got.safetensors").exists()
    assert not (tmp_path / "got.safetensors.partial").exists()
    with pytest.raises(OSError, match="corrupt"):  # auto falls back to the stream: same bytes
        client.download_model_version(version.id, tmp_path / "got.safetensors")
    assert not (tmp_path / "got.safetensors").exists()


@pytest.mark.parametrize("call, named", [
    ("model_name_with_slash", "header.model_name"),
    ("model_name_with_control", "header.model_name"),
    ("alias_like_a_version", "looks like a version number"),
    ("alias_latest", "looks like a version number"),
    ("long_tag_key", "the limit is 128"),
    ("tag_value_with_control", "control characters"),
    ("dataset_name_with_backslash", "header.name"),
])
def test_bad_names_and_tags_are_invalid_and_write_nothing(backend, client, tmp_path, call, named):
    path = weights(tmp_path / "w.safetensors", seed=3)
    name = unique("valid")
    before = backend.content_keys()
    if call == "model_name_with_slash":
        # One '/' names a team ("team-a/mlp", refused for another team's); two name nothing.
        attempt = lambda: client.upload_model(path, "a/team/model", architecture=ARCH)  # noqa: E731
    elif call == "model_name_with_control":
        attempt = lambda: client.upload_model(path, "model\x07", architecture=ARCH)  # noqa: E731
    elif call in ("alias_like_a_version", "alias_latest"):
        version = client.upload_model(path, name, architecture=ARCH)
        before = backend.content_keys()
        alias = "v2" if call == "alias_like_a_version" else "latest"
        attempt = lambda: client.set_alias(name, alias, version.id)  # noqa: E731
    elif call == "long_tag_key":
        attempt = lambda: client.upload_model(path, name, architecture=ARCH,  # noqa: E731
                                              tags={"k" * 129: "v"})
    elif call == "tag_value_with_control":
        attempt = lambda: client.upload_model(path, name, architecture=ARCH,  # noqa: E731
                                              tags={"note": "bad\nvalue"})
    else:
        data = tmp_path / "d.safetensors"
        save_file({"x": torch.randn(4, 4), "y": torch.randn(4, 2)}, str(data))
        attempt = lambda: client.upload_dataset(data, "data\\set")  # noqa: E731
    code, message = code_of(attempt)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named in message, message
    assert backend.content_keys() == before
    if call in ("alias_like_a_version", "alias_latest"):
        assert client.registry.ListAliases(
            registry_pb2.ListAliasesRequest(model_name=name)).aliases == []
    elif call != "dataset_name_with_backslash":
        code, _ = code_of(client.registry.GetModel, registry_pb2.GetModelRequest(name=name))
        assert code == grpc.StatusCode.NOT_FOUND


def test_datasets_are_versioned_by_name_and_protected_by_lineage(backend, client, tmp_path):
    name = unique("ds")
    data = tmp_path / "d.safetensors"
    save_file({"x": torch.randn(6, 4), "y": torch.randn(6, 2)}, str(data))
    first = client.upload_dataset(data, name)
    save_file({"x": torch.randn(7, 4), "y": torch.randn(7, 2)}, str(data))
    second = client.upload_dataset(data, name)
    assert (first.version, second.version) == (1, 2)
    version = client.upload_model(weights(tmp_path / "w.safetensors", seed=9), unique("uses"),
                                  architecture=ARCH,
                                  lineage=registry_pb2.Lineage(dataset_version_id=second.id))
    code, message = code_of(client.delete_dataset, second.id)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and version.id in message
    assert client.delete_dataset(first.id) is True
    assert client.set_tags(dataset_id=second.id, set={"a": "1"}) == {"a": "1"}


@pytest.mark.parametrize("failure", ["sha256-mismatch", "not-an-archive"])
def test_a_large_upload_streamed_while_it_arrives_leaves_nothing_when_it_fails(
        backend, client, tmp_path, failure):
    """Uploads from 16 MiB on go to the store while they arrive; one that then fails its
    checksum or its format check must leave no object behind (S3: the multipart upload is
    aborted; local: the temp file is never renamed into place)."""
    name = unique(f"streamed-{failure}")
    path = tmp_path / "big.pt2"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * (20 * 4096))  # ~20 MiB, not a zip
    sha, size = file_digest(path)
    if failure == "sha256-mismatch":
        sha = "0" * 64
    header = registry_pb2.ModelUploadHeader(
        model_name=name, format=models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT, sha256=sha,
        size_bytes=size)
    data = path.read_bytes()
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    messages = [registry_pb2.UploadModelVersionRequest(header=header),
                *(registry_pb2.UploadModelVersionRequest(chunk=c) for c in chunks)]
    before = backend.content_keys()
    code, _ = code_of(client.registry.UploadModelVersion, iter(messages))
    assert code == (grpc.StatusCode.DATA_LOSS if failure == "sha256-mismatch"
                    else grpc.StatusCode.INVALID_ARGUMENT)
    assert backend.content_keys() == before
    assert backend.staging_files() == []
    assert client.collect_garbage(dry_run=True).objects_removed == 0  # nothing left to collect


def test_a_large_upload_is_streamed_and_committed_whole(backend, client, tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "big.safetensors"
    big = models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[2048, 2600]))
    save_file({"layers.0.weight": torch.randn(2600, 2048), "layers.0.bias": torch.randn(2600)},
              str(path))
    version = client.upload_model(path, unique("streamed"), architecture=big)
    assert f"sha256/{version.sha256[:2]}/{version.sha256}" in backend.content_keys()
    back = client.download_model_version(version.id, tmp_path / "back.safetensors")
    assert file_digest(back) == file_digest(path)


def test_database_connections_dropped_mid_upload_commit_whole_or_answer_unavailable(
        backend, client, tmp_path):
    """PostgreSQL drops every connection (as a restart does) again and again while uploads run:
    each upload either commits whole (its record readable, its bytes the ones sent) or answers
    UNAVAILABLE and leaves nothing visible; once the collector ran, no stored bytes lack a
    record."""
    if backend.kind != "postgres-s3":
        pytest.skip("dropping database connections is a PostgreSQL fault")
    import threading

    import sqlalchemy as sa

    from registry_backend import POSTGRES_ADMIN

    database = backend.env["LAMBDASCOPE_DATABASE_URL"].rsplit("/", 1)[1]
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    stop = threading.Event()
    dropped = []

    def drop_connections() -> None:
        while not stop.wait(0.05):
            with admin.connect() as conn:
                dropped.append(conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).scalar())

    files = []
    for i in range(6):
        path = tmp_path / f"data-{i}.safetensors"
        save_file({"x": torch.randn(20_000, 64, generator=torch.Generator().manual_seed(i)),
                   "y": torch.randn(20_000, 1)}, str(path))
        files.append((path, unique(f"dropped-{i}")))
    outcomes = []
    dropper = threading.Thread(target=drop_connections, daemon=True)
    dropper.start()
    try:
        for path, name in files:
            try:
                outcomes.append((path, name, client.upload_dataset(path, name)))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
                outcomes.append((path, name, None))
    finally:
        stop.set()
        dropper.join(10)
    assert sum(dropped) > 0, "no connection was dropped: the fault never happened"
    for path, name, dataset in outcomes:
        found = list(client.list_datasets(name))
        if dataset is None:
            assert found == [], name  # refused: nothing visible
        else:
            assert [d.id for d in found] == [dataset.id]
            assert dataset.sha256 == file_digest(path)[0]
            got = client.download_dataset(dataset.id, tmp_path / f"{name}.back")
            assert file_digest(got)[0] == dataset.sha256
    time.sleep(2.5)  # older than the staging TTL: pins of refused uploads no longer protect
    client.collect_garbage()
    engine = sa.create_engine(backend.env["LAMBDASCOPE_DATABASE_URL"])
    with engine.connect() as conn:
        referenced = set(conn.execute(sa.text(
            "SELECT sha256 FROM model_versions UNION SELECT sha256 FROM datasets")).scalars())
    engine.dispose()
    admin.dispose()
    stored = {key.rsplit("/", 1)[1] for key in backend.content_keys()}
    assert stored <= referenced, stored - referenced
