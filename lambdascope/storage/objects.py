"""Object storage behind one small interface: a local directory (the embedded default) or any
S3-compatible server (MinIO, AWS S3, ...), chosen by `Settings.object_store`.

Keys are content addresses (`sha256/ab/abcdef...`), so identical artifacts are stored once and
`put_file` of an existing key is a no-op. `put_file` is atomic on both backends: an object is
either absent or whole, never half-written. Both backends stream; no object is held in memory.
"""
from __future__ import annotations

import datetime
import os
import pathlib
import stat as stat_mode
import tempfile
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple, Protocol

import certifi
import minio
import urllib3
from minio.error import MinioException, S3Error

from lambdascope import config

CHUNK = 1 << 20
# Part size of streamed S3 uploads (S3's minimum is 5 MiB; each part is held in memory).
STREAM_PART = 8 << 20
_TEMP_PREFIX = ".incoming-"
# Codes under which S3 reports that a bucket someone just created exists (the creation race).
_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
_CREDENTIALS_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def content_key(sha256_hex: str) -> str:
    return f"sha256/{sha256_hex[:2]}/{sha256_hex}"


class ObjectInfo(NamedTuple):
    key: str
    size: int
    modified: float  # unix seconds


class ObjectStoreError(RuntimeError):
    """The storage backend failed (unreachable, credentials refused, ...); the message says
    where and during which operation, so an operator can act on it."""


class ObjectStore(Protocol):
    @property
    def describe(self) -> str: ...
    def put_file(self, key: str, path: pathlib.Path) -> None: ...
    def put_stream(self, key: str, stream: BinaryIO, length: int) -> None: ...
    def read_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def stat(self, key: str) -> ObjectInfo | None: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def presigned_get(self, key: str, expires_seconds: int) -> str | None: ...


def check_key(key: str, *, prefix: bool = False) -> str:
    """`key` if it is a plain relative path of non-empty segments; one that could escape its
    store or mean different objects on different backends is refused. A `prefix` may be empty
    and end with "/"."""
    if prefix and not key:
        return key
    body = key[:-1] if prefix and key.endswith("/") else key
    if (any(seg in ("", ".", "..") for seg in body.split("/"))
            or any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in key)):
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalObjectStore:
    """Objects as files under `root`; writes go through a temp file and an atomic rename."""

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> pathlib.Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object key {key!r} escapes the store")
        return path

    def put_file(self, key: str, path: pathlib.Path) -> None:
        if self._path(key).exists():
            return  # content-addressed: the same key holds the same bytes
        with open(path, "rb") as src:
            self.put_stream(key, src, os.fstat(src.fileno()).st_size)

    def put_stream(self, key: str, stream: BinaryIO, length: int) -> None:
        """Write `length` bytes from `stream` to a temp file renamed into place at the end: the
        object appears whole or not at all (an exception from `stream.read` leaves nothing)."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                left = length
                while left > 0:
                    chunk = stream.read(min(CHUNK, left))
                    if not chunk:
                        raise OSError(f"the stream ended {left} bytes short of {length}")
                    out.write(chunk)
                    left -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise

    def read_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with open(self._path(key), "rb") as src:
            while chunk := src.read(chunk_size):
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime) if stat_mode.S_ISREG(st.st_mode) else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        directory = self.root / check_key(prefix, prefix=True).rpartition("/")[0]
        for dirpath, _, filenames in os.walk(directory):
            for name in filenames:
                if name.startswith(_TEMP_PREFIX):
                    continue  # a write in flight, not an object yet
                path = pathlib.Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue  # deleted while listing
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def presigned_get(self, key: str, expires_seconds: int) -> str | None:
        return None  # a directory has no URL to hand out


def _default_http() -> urllib3.PoolManager:
    """minio's own default waits 5 minutes to connect; fail a dead endpoint within seconds."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=300),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class S3ObjectStore:
    """Objects in an S3-compatible bucket, every key under `prefix/`. The bucket is created
    when missing, so a fresh deployment needs no manual step."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 prefix: str = "", secure: bool = True, region: str | None = None,
                 http_client: urllib3.PoolManager | None = None):
        self.endpoint, self.bucket, self.secure = endpoint, bucket, secure
        self.prefix = check_key(prefix.strip("/"), prefix=True)
        self._root = self.prefix + "/" if self.prefix else ""
        try:
            self._client = minio.Minio(endpoint, access_key=access_key or None,
                                       secret_key=secret_key or None, secure=secure,
                                       region=region or None,
                                       http_client=http_client or _default_http())
        except ValueError as exc:
            raise ObjectStoreError(f"bad S3 endpoint {endpoint!r}: {exc}") from None
        self._ensure_bucket()

    @property
    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {'https' if self.secure else 'http'}://{self.endpoint}"

    def _ensure_bucket(self) -> None:
        try:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                # Another process created it between our check and our create: fine if ours.
                if exc.code not in _BUCKET_EXISTS or not self._client.bucket_exists(self.bucket):
                    raise
        except (MinioException, urllib3.exceptions.HTTPError, ValueError) as exc:
            raise self._error("opening the bucket", exc) from None

    def _error(self, operation: str, exc: Exception, key: str = "") -> ObjectStoreError:
        if isinstance(exc, S3Error):
            reason = f"{exc.code}: {exc.message}"
            if exc.code in _CREDENTIALS_REFUSED:
                reason = f"credentials refused ({reason})"
        elif isinstance(exc, urllib3.exceptions.HTTPError):
            reason = f"endpoint unreachable ({type(exc).__name__}: {exc})"
        else:
            reason = str(exc)
        target = f" of {key!r}" if key else ""
        return ObjectStoreError(f"{operation}{target} failed on {self.describe}: {reason}")

    def _name(self, key: str) -> str:
        return self._root + check_key(key)

    def put_file(self, key: str, path: pathlib.Path) -> None:
        if self.stat(key) is not None:
            return  # content-addressed: the same key holds the same bytes
        try:
            # minio reads the file in parts of >= 5 MiB (part_size=0 grows them for files over
            # 48 GiB) and holds at most parallel + 1 parts in memory (~15 MiB here). A multipart
            # upload only becomes visible when completed, so readers never see half an object.
            self._client.fput_object(self.bucket, self._name(key), str(path), part_size=0,
                                     num_parallel_uploads=2)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("upload", exc, key) from None

    def put_stream(self, key: str, stream: BinaryIO, length: int) -> None:
        """Upload `length` bytes as `stream` yields them (multipart, parts of STREAM_PART). The
        object appears only once the stream delivered every byte: an exception from
        `stream.read` aborts the multipart upload and leaves nothing visible."""
        try:
            self._client.put_object(self.bucket, self._name(key), stream, length,
                                    part_size=STREAM_PART, num_parallel_uploads=2)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("upload", exc, key) from None

    def read_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            response = self._client.get_object(self.bucket, self._name(key))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise FileNotFoundError(f"no object {key!r} in {self.describe}") from None
            raise self._error("download", exc, key) from None
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("download", exc, key) from None
        try:
            yield from response.stream(chunk_size)
        except urllib3.exceptions.HTTPError as exc:
            raise self._error("download", exc, key) from None
        finally:
            # Also runs when the consumer stops early: the connection goes back to the pool.
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            found = self._client.stat_object(self.bucket, self._name(key))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise self._error("stat", exc, key) from None
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("stat", exc, key) from None
        return ObjectInfo(key, found.size or 0, _seconds(found.last_modified))

    def delete(self, key: str) -> None:
        try:
            self._client.remove_object(self.bucket, self._name(key))  # S3 deletes are idempotent
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("delete", exc, key) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        name_prefix = self._root + check_key(prefix, prefix=True)
        try:
            for found in self._client.list_objects(self.bucket, prefix=name_prefix,
                                                   recursive=True):
                yield ObjectInfo(found.object_name[len(self._root):], found.size or 0,
                                 _seconds(found.last_modified))
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("list", exc, prefix) from None

    def presigned_get(self, key: str, expires_seconds: int) -> str | None:
        try:
            return self._client.presigned_get_object(
                self.bucket, self._name(key), expires=datetime.timedelta(seconds=expires_seconds))
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._error("presign", exc, key) from None


def _seconds(moment: datetime.datetime | None) -> float:
    return moment.timestamp() if moment else 0.0


def open_store(settings: config.Settings) -> ObjectStore:
    """The store `settings.object_store` names: `s3://bucket[/prefix]` or a local directory."""
    location = settings.object_store
    if not location.startswith("s3://"):
        return LocalObjectStore(settings.objects_dir)
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    if not bucket:
        raise SystemExit(f"{config.ENV_PREFIX}OBJECT_STORE={location!r} names no bucket")
    if not settings.s3_endpoint:
        raise SystemExit(f"{config.ENV_PREFIX}OBJECT_STORE={location!r} needs the S3 server's "
                         f"host:port in {config.ENV_PREFIX}S3_ENDPOINT")
    return S3ObjectStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                         bucket, prefix, secure=settings.s3_secure,
                         region=settings.s3_region or None)
