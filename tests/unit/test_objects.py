"""The object store's behaviour, run alike against both backends: a local directory and an
S3ObjectStore on a real S3 endpoint (moto's server on loopback, a fresh bucket per test)."""
from __future__ import annotations

import hashlib
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest
import urllib3
from s3server import MotoS3

from lambdascope import config
from lambdascope.storage.objects import (
    LocalObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    content_key,
    open_store,
)

MIB = 1 << 20
REPO = pathlib.Path(__file__).resolve().parents[2]


def _http(**kw) -> urllib3.PoolManager:
    """Short timeouts, no retries; a small blocking pool, so a connection that is never given
    back makes later calls hang (caught by the test timeout) instead of passing unnoticed."""
    return urllib3.PoolManager(maxsize=2, block=True, retries=0,
                               timeout=urllib3.Timeout(connect=2, read=20), **kw)


def _s3(endpoint: str, bucket: str | None = None, region: str | None = None) -> S3ObjectStore:
    return S3ObjectStore(endpoint, "test", "test", bucket or f"t-{uuid.uuid4().hex[:12]}",
                         prefix="audits/", secure=False, region=region, http_client=_http())


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    with MotoS3() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return _s3(request.getfixturevalue("s3_endpoint"))


def _random_file(path: pathlib.Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(0, size, MIB):
            block = os.urandom(min(MIB, size))
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _read(store, key: str) -> bytes:
    return b"".join(store.read_chunks(key))


def test_round_trip_of_a_multipart_file_in_chunks(store, tmp_path):
    path = tmp_path / "big.bin"
    sha = _random_file(path, 12 * MIB)
    key = content_key(sha)
    store.put_file(key, path)

    digest, chunks = hashlib.sha256(), 0
    for chunk in store.read_chunks(key, chunk_size=MIB):
        assert 0 < len(chunk) <= MIB
        digest.update(chunk)
        chunks += 1
    assert digest.hexdigest() == sha and chunks >= 12
    assert store.stat(key).size == 12 * MIB


def test_s3_uploads_large_files_in_parts(s3_endpoint, tmp_path):
    store = _s3(s3_endpoint)
    path = tmp_path / "big.bin"
    _random_file(path, 12 * MIB)
    store.put_file("k", path)
    etag = store._client.stat_object(store.bucket, "audits/k").etag
    assert etag.endswith("-3"), etag  # a multipart ETag: three parts of 5, 5 and 2 MiB


def test_put_of_an_existing_key_is_a_no_op(store, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first")
    second.write_bytes(b"second, longer")
    store.put_file("sha256/ab/same", first)
    before = store.stat("sha256/ab/same")
    store.put_file("sha256/ab/same", second)
    # Had the second upload happened, the bytes (and size) would be the second file's.
    assert _read(store, "sha256/ab/same") == b"first"
    assert store.stat("sha256/ab/same") == before


def test_exists_stat_delete(store, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    assert not store.exists("a/b") and store.stat("a/b") is None
    started = time.time()
    store.put_file("a/b", path)
    info = store.stat("a/b")
    assert store.exists("a/b")
    assert info.key == "a/b" and info.size == 1000
    assert started - 5 < info.modified < time.time() + 5
    store.delete("a/b")
    store.delete("a/b")  # idempotent
    assert not store.exists("a/b") and store.stat("a/b") is None
    with pytest.raises(FileNotFoundError):
        _read(store, "a/b")


def test_list_under_a_prefix(store, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    keys = ["sha256/ab/x1", "sha256/ab/x2", "sha256/cd/y", "other/z"]
    for key in keys:
        store.put_file(key, path)

    def listed(prefix: str = "") -> set[str]:
        return {info.key for info in store.list(prefix)}

    assert listed() == set(keys)
    assert listed("sha256/") == set(keys[:3])
    assert listed("sha256/ab/") == {"sha256/ab/x1", "sha256/ab/x2"}
    assert listed("sha256/a") == {"sha256/ab/x1", "sha256/ab/x2"}  # a prefix, not a folder
    assert listed("nothing/") == set()
    assert {info.size for info in store.list()} == {5}


def test_local_list_skips_writes_in_flight(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    path = tmp_path / "f"
    path.write_bytes(b"done")
    store.put_file("sha256/ab/done", path)
    (tmp_path / "objects" / "sha256" / "ab" / ".incoming-x1y2").write_bytes(b"half")
    assert [info.key for info in store.list()] == ["sha256/ab/done"]


@pytest.mark.timeout(30)
def test_a_read_closed_early_gives_its_connection_back(store, tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3 * MIB)
    path.write_bytes(data)
    store.put_file("k", path)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(5):  # more than the test pool's two connections
        chunks = store.read_chunks("k", chunk_size=64 * 1024)
        assert len(next(chunks)) == 64 * 1024
        chunks.close()
    for i in range(20):
        assert store.exists("k") and store.stat("k").size == len(data)
        if i % 5 == 0:
            assert _read(store, "k") == data
    assert len(os.listdir("/proc/self/fd")) <= fds + 2  # at most the pool's two sockets


def test_presigned_get(store, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"signed bytes")
    store.put_file("sha256/ab/signed", path)
    url = store.presigned_get("sha256/ab/signed", 60)
    if isinstance(store, LocalObjectStore):
        assert url is None
        return
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"signed bytes"


@pytest.mark.parametrize("key", ["", "../x", "a/../../x", "/abs", "a//b", "a/./b", "a/",
                                 "a\\b", "a\x00b", "a\nb"])
def test_keys_that_could_escape_or_alias_are_refused(store, tmp_path, key):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    for call in (lambda: store.put_file(key, path), lambda: store.exists(key),
                 lambda: store.stat(key), lambda: store.delete(key), lambda: _read(store, key)):
        with pytest.raises(ValueError):
            call()


def test_local_refuses_a_symlink_out_of_the_root(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    (tmp_path / "outside").mkdir()
    (tmp_path / "objects" / "link").symlink_to(tmp_path / "outside")
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="escapes"):
        store.put_file("link/x", path)
    assert not list((tmp_path / "outside").iterdir())


def test_bucket_is_created_when_missing_even_by_racing_processes(s3_endpoint):
    """Outside us-east-1 a second CreateBucket answers BucketAlreadyOwnedByYou (in moto too)."""
    bucket = f"race-{uuid.uuid4().hex[:12]}"
    barrier, errors = threading.Barrier(8), []

    def create() -> None:
        barrier.wait()
        try:
            _s3(s3_endpoint, bucket, region="eu-west-1")
        except Exception as exc:  # noqa: BLE001 (collected for the assertion)
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _s3(s3_endpoint, bucket, region="eu-west-1")._client.bucket_exists(bucket)


def test_an_unreachable_endpoint_fails_fast_naming_it():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match=f"{endpoint}.*unreachable"):
        S3ObjectStore(endpoint, "k", "s", "models", secure=False, http_client=_http())
    assert time.monotonic() - started < 5


def _status_kib(field: str) -> str:
    return f"int(open('/proc/self/status').read().split('{field}:')[1].split()[0])"


@pytest.mark.timeout(120)
def test_put_file_streams_instead_of_reading_the_file_whole(store, tmp_path):
    """Measured in a fresh process: moto keeps what it receives in this one. The child's
    ru_maxrss would still hold this process's peak (it survives fork and exec), so the child
    resets its high-water mark (VmHWM) through /proc/self/clear_refs before the upload."""
    path = tmp_path / "huge.bin"
    with open(path, "wb") as out:
        out.truncate(64 * MIB)
    if isinstance(store, LocalObjectStore):
        make = f"LocalObjectStore({str(store.root)!r})"
    else:
        make = (f"S3ObjectStore({store.endpoint!r}, 'test', 'test', {store.bucket!r}, "
                f"{store.prefix!r}, secure=False)")
    code = (
        "import pathlib\n"
        "from lambdascope.storage.objects import LocalObjectStore, S3ObjectStore\n"
        f"store = {make}\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        f"before = {_status_kib('VmRSS')}\n"
        f"store.put_file('huge', pathlib.Path({str(path)!r}))\n"
        f"print({_status_kib('VmHWM')} - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    grew_mib = int(done.stdout.split()[-1]) / 1024
    assert grew_mib < 32, f"peak RSS grew by {grew_mib:.1f} MiB uploading 64 MiB"
    assert store.stat("huge").size == 64 * MIB


def test_open_store_picks_the_backend_from_settings(s3_endpoint, tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    local = open_store(config.load("registry", data_dir=tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objects"

    with pytest.raises(SystemExit, match="LAMBDASCOPE_S3_ENDPOINT"):
        open_store(config.load("registry", data_dir=tmp_path, object_store="s3://models"))

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3 = open_store(config.load("registry", data_dir=tmp_path,
                                object_store=f"s3://{bucket}/team/a", s3_endpoint=s3_endpoint,
                                s3_access_key="k", s3_secret_key="s", s3_secure="false"))
    assert isinstance(s3, S3ObjectStore)
    assert s3.describe == f"s3://{bucket}/team/a at http://{s3_endpoint}"
    path = tmp_path / "f"
    path.write_bytes(b"x")
    s3.put_file("k", path)
    assert s3._client.stat_object(bucket, "team/a/k").size == 1


def test_keys_live_under_the_prefix(s3_endpoint, tmp_path):
    store = _s3(s3_endpoint)
    path = tmp_path / "f"
    path.write_bytes(b"x")
    store.put_file("sha256/ab/k", path)
    names = [o.object_name for o in store._client.list_objects(store.bucket, recursive=True)]
    assert names == ["audits/sha256/ab/k"]
    assert [info.key for info in store.list()] == ["sha256/ab/k"]
