"""An artifact's bytes, from upload to removal: staging, inspection, commit, download, freeing.

Receiving stages a chunked upload to a private file, hashing while it streams, and verifies its
size and sha256. `Artifacts` owns the two-phase commit that follows: bytes go to the object
store, then their record to SQL (which releases the upload's pin in its transaction). A staged
file is never visible as a version: it is committed only after every check passed, and deleted
in all other cases, and content is freed once no record references it. The servicer only
translates the RPCs to these calls.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import pathlib
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from lambdascope import errors, inspection, quotas
from lambdascope.storage.objects import CHUNK, ObjectStore, content_key
from lambdascope.v1 import registry_pb2
from services.registry import checks
from services.registry.store import RegistryStore, Replayed, UploadRequest

if TYPE_CHECKING:
    from lambdascope.metrics import RegistryMetrics

log = logging.getLogger("lambdascope.registry")
MAX_CHUNK = 4 << 20
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_ARTIFACT_BYTES = 16 << 30
MAX_REQUEST_ID = 128
# Uploads at least this large go to the object store while they arrive (smaller ones gain
# nothing from the overlap and are stored after verification).
STREAM_AT_BYTES = 16 << 20
R = TypeVar("R")


@dataclasses.dataclass
class Staged:
    header: Any
    path: pathlib.Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def receive(requests: Iterator[Any], staging_dir: pathlib.Path, max_bytes: int,
            check_header: Callable[[Any], None],
            tee_for: Callable[[Any], StreamTee | None] | None = None) -> Staged:
    """Read a header message then chunks into a staging file; check size and sha256.
    `check_header` refuses a bad header before any data is stored; `tee_for(header)` may
    return a StreamTee that stores the bytes while they arrive (finished here, verified)."""
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "header":
        raise errors.InvalidArgument("an upload must start with a header message, then chunks")
    header = first.header
    check_header(header)
    declared = header.sha256.lower()
    if not HEX64.match(declared):
        raise errors.InvalidArgument(
            "header.sha256 must be the artifact's sha256 as 64 hex digits")
    if header.size_bytes < 0 or header.size_bytes > max_bytes:
        raise errors.InvalidArgument(
            f"header.size_bytes must be between 0 and {max_bytes} (got {header.size_bytes})")
    staging_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=staging_dir, prefix="upload-")
    path = pathlib.Path(name)
    digest, size = hashlib.sha256(), 0
    tee = None
    try:
        tee = tee_for(header) if tee_for is not None else None
        with os.fdopen(fd, "wb") as out:
            for message in requests:
                if message.WhichOneof("part") != "chunk":
                    raise errors.InvalidArgument("only chunks may follow the header")
                chunk = message.chunk
                if len(chunk) > MAX_CHUNK:
                    raise errors.InvalidArgument(f"chunks must be at most {MAX_CHUNK} bytes")
                size += len(chunk)
                if size > header.size_bytes:
                    raise errors.DataLoss(
                        f"received more than the declared {header.size_bytes} bytes; "
                        "nothing was registered")
                digest.update(chunk)
                out.write(chunk)
                if tee is not None:
                    tee.write(chunk)
        if size != header.size_bytes:
            raise errors.DataLoss(
                f"received {size} bytes but the header declared {header.size_bytes}; "
                "the upload was cut short; nothing was registered")
        actual = digest.hexdigest()
        if actual != declared:
            raise errors.DataLoss(
                f"sha256 of the received bytes is {actual} but the header declared {declared}: "
                "the data was corrupted on the way or the header is wrong; nothing was registered")
    except BaseException:
        if tee is not None:
            tee.finish(ok=False)
        path.unlink(missing_ok=True)
        raise
    if tee is not None:
        tee.finish(ok=True)  # on False the store did not get it; the commit stores the file
    return Staged(header, path, actual, size)


_EOF = object()


class UploadAborted(Exception):
    """The upload being streamed to the object store was cut off or failed verification."""


class StreamTee:
    """Feeds an upload's chunks to the object store while they arrive (`upload` runs in its own
    thread and reads this object like a file), so storing overlaps receiving.

    The last chunk is held back until `finish(ok=True)`: the store sees the upload's final byte
    only after its size and sha256 were verified, and `finish(ok=False)` makes the next read
    raise, which aborts the store's multipart upload. Either way nothing unverified becomes
    visible. If the store's upload fails, chunks are dropped and `finish` reports False: the
    caller then stores the staged file instead."""

    def __init__(self, upload: Callable[[StreamTee], None], depth: int = 16):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._pending: bytes | None = None
        self._chunks: collections.deque[bytes | memoryview] = collections.deque()
        self._buffered = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(upload,), daemon=True,
                                        name="upload-stream")
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        if self._pending is not None:
            self._put(self._pending)
        self._pending = chunk

    def finish(self, ok: bool) -> bool:
        """End the stream; True when the store now holds the whole, verified object."""
        if ok and self._pending is not None:
            self._put(self._pending)
        self._pending = None
        self._put(_EOF if ok else UploadAborted("the upload was cut off or failed verification"))
        self._thread.join()
        return ok and self.error is None

    def read(self, size: int = -1) -> bytes:
        while size < 0 or self._buffered < size:
            item = self._queue.get()
            if item is _EOF:
                self._queue.put(_EOF)  # later reads see the end too
                break
            if isinstance(item, BaseException):
                raise item
            self._chunks.append(item)
            self._buffered += len(item)
        # Whole chunks go out as they are and the bytes are copied once, by the join (a part
        # of the store is a whole number of chunks, so a chunk is rarely split).
        want = self._buffered if size < 0 else min(size, self._buffered)
        parts, taken = [], 0
        while taken < want:
            chunk = self._chunks.popleft()
            if taken + len(chunk) > want:  # split it without copying (views)
                view = memoryview(chunk)
                self._chunks.appendleft(view[want - taken:])
                chunk = view[:want - taken]
            parts.append(chunk)
            taken += len(chunk)
        self._buffered -= taken
        return b"".join(parts)

    def _put(self, item: object) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self, upload: Callable[[StreamTee], None]) -> None:
        try:
            upload(self)
        except BaseException as exc:  # noqa: BLE001 - reported by finish(); aborts are expected
            self.error = exc


class Artifacts:
    """The registry's artifact bytes for its RPCs: uploads received, checked and committed,
    downloads streamed or presigned, and content freed once no record references it.

    Content is reference-counted in SQL (see store.py): an upload pins its sha256 once its
    header passed, and either its record's insert releases the pin or `_release` does."""

    def __init__(self, store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path,
                 *, metrics: RegistryMetrics | None = None,
                 quotas: quotas.Quotas | None = None):
        self.store = store
        self.objects = objects
        self.staging_dir = staging_dir
        self.metrics = metrics
        self.quotas = quotas

    def upload_model(self, requests: Iterator[registry_pb2.UploadModelVersionRequest],
                     team: str) -> registry_pb2.ModelVersion:
        return self._upload(requests, team, False, lambda header: self._check_model_header(header, team),
                            _describe_model,
                            lambda version, tags, request: self.store.add_version(version, tags, team, request))

    def upload_dataset(self, requests: Iterator[registry_pb2.UploadDatasetRequest],
                       team: str) -> registry_pb2.Dataset:
        return self._upload(requests, team, True, lambda header: self._check_dataset_header(header, team),
                            _describe_dataset,
                            lambda dataset, tags, request: self.store.add_dataset(dataset, tags, team, request))

    def download(self, sha256: str, size: int) -> Iterator[registry_pb2.DownloadChunk]:
        key = content_key(sha256)
        if not self.objects.exists(key):
            raise errors.DataLoss(f"the object {sha256} is missing from the object store")
        first, sent = True, 0
        try:
            for chunk in self.objects.read_chunks(key, CHUNK):
                if first:
                    yield registry_pb2.DownloadChunk(sha256=sha256, size_bytes=size, chunk=chunk)
                    first = False
                else:
                    yield registry_pb2.DownloadChunk(chunk=chunk)
                sent += len(chunk)
            if first:  # an empty object still announces itself
                yield registry_pb2.DownloadChunk(sha256=sha256, size_bytes=size)
        finally:
            if self.metrics is not None:
                self.metrics.downloaded(sent)

    def url(self, sha256: str, expires_seconds: int) -> str:
        """A presigned URL that reads the content's bytes for `expires_seconds`."""
        url = self.objects.presigned_get(content_key(sha256), expires_seconds)
        if url is None:
            raise errors.FailedPrecondition(
                "this registry keeps artifacts in a local directory, which has no URLs: "
                "download through DownloadModelVersion / DownloadDataset")
        return url

    def free(self, sha256: str) -> bool:
        """Remove content once nothing references it (the record that did is gone)."""
        if not self.store.claim_for_removal(sha256):
            return False
        try:
            self.objects.delete(content_key(sha256))
        except BaseException:
            self.store.unclaim(sha256)
            raise
        self.store.forget_object(sha256)
        return True

    def _upload(self, requests: Iterator[Any], team: str, dataset: bool, check_header: Callable[[Any], None],
                describe: Callable[[Staged], R],
                add: Callable[[R, dict[str, str], UploadRequest | None], R]) -> R:
        """Receive an upload, `describe` the staged bytes as a record (refusing what does not
        parse), make sure the bytes are stored (a no-op when they were streamed or existed),
        then `add` the record with the header's tags, which releases the upload's pin in its
        transaction. Any failure releases the pin instead; the staging file goes either way.
        A header whose request id already made a record (a retry) is answered with that record,
        before its bytes are read or, when the first attempt commits meanwhile, at the commit."""
        request: UploadRequest | None = None

        def check(header: Any) -> None:
            nonlocal request
            request = upload_request(header, team)
            if request is not None and (found := self.store.replay(request, team, dataset=dataset)) is not None:
                raise Replayed(found)
            check_header(header)
        try:
            staged = self._receive(requests, check)
            try:
                try:
                    record = describe(staged)
                    self.objects.put_file(content_key(staged.sha256), staged.path)
                    return add(record, dict(staged.header.tags), request)
                except BaseException:
                    self._release(staged.sha256)
                    raise
            finally:
                staged.discard()
        except Replayed as replay:
            return replay.record

    def _receive(self, requests: Iterator[Any], check_header: Callable[[Any], None]) -> Staged:
        """Receive an upload into staging. Once the header passed, its content is pinned (a
        collector leaves it alone until the record commits or the upload fails) and, when it
        is new and large, streamed to the object store while it arrives."""
        pinned: list[str] = []

        def tee_for(header) -> StreamTee | None:
            sha = header.sha256.lower()
            self.store.pin_object(sha, header.size_bytes)
            pinned.append(sha)
            key = content_key(sha)
            if header.size_bytes < STREAM_AT_BYTES or self.objects.exists(key):
                return None
            return StreamTee(lambda stream: self.objects.put_stream(key, stream, header.size_bytes))

        try:
            staged = receive(requests, self.staging_dir, MAX_ARTIFACT_BYTES, check_header, tee_for)
        except BaseException:
            for sha in pinned:
                self._release(sha)
            raise
        if self.metrics is not None:
            self.metrics.uploaded(staged.size)
        return staged

    def _release(self, sha256: str) -> None:
        """An upload ended without a record: unpin its content and remove it if nothing else
        uses it (bytes streamed for an upload that then failed its checks). A removal that
        fails is left to the collector: the upload's own error is what the caller hears."""
        self.store.unpin_object(sha256)
        try:
            self.free(sha256)
        except Exception:  # noqa: BLE001
            log.warning("could not remove the bytes of a failed upload; the collector will",
                        extra={"sha256": sha256}, exc_info=True)

    def _check_dataset_header(self, header: registry_pb2.DatasetUploadHeader, team: str) -> None:
        header.name = checks.own("header.name", header.name, team)
        self._check_room(header, team)
        checks.check_tags("header.tags", dict(header.tags))

    def _check_model_header(self, header: registry_pb2.ModelUploadHeader, team: str) -> None:
        """Refuse what the header alone shows to be wrong, before the body is stored."""
        header.model_name = checks.own("header.model_name", header.model_name, team)
        checks.check_tags("header.tags", dict(header.tags))
        self._check_room(header, team)
        checks.check_model_artifact(header)
        self._check_lineage(header.lineage, team)

    def _check_room(self, header: registry_pb2.ModelUploadHeader | registry_pb2.DatasetUploadHeader,
                    team: str) -> None:
        """Refuse an upload that would take the team past its stored-bytes quota (content the
        team already holds adds nothing). Checked before the body arrives; two uploads racing
        may overshoot the quota by one upload."""
        limit = self.quotas.of(team).stored_bytes if self.quotas else 0
        if not limit:
            return
        held, has_it = self.store.team_bytes(team, header.sha256.lower())
        if not has_it and held + header.size_bytes > limit:
            raise quotas.exceeded(
                f"team {team!r} holds {held} bytes; this upload of {header.size_bytes} bytes "
                f"would pass its quota (stored_bytes = {limit}): delete versions or datasets "
                "it no longer needs (lambdascope rm), or ask an admin for more")

    def _check_lineage(self, lineage: registry_pb2.Lineage, team: str) -> None:
        if lineage.parent_version_id:  # a reference is stored as the id it names now
            lineage.parent_version_id = self.store.get_version(lineage.parent_version_id,
                                                               team).id
        if lineage.dataset_version_id:
            self.store.get_dataset(lineage.dataset_version_id, team)


def upload_request(header: Any, team: str) -> UploadRequest | None:
    """The idempotency key of an upload header (None without a request id): the team's request
    id, and the digest of the header as sent less that id, so a retry matches and another upload
    under the same id does not."""
    request_id = header.request_id
    if not request_id:
        return None
    if len(request_id) > MAX_REQUEST_ID:
        raise errors.InvalidArgument(
            f"header.request_id must be at most {MAX_REQUEST_ID} characters (got {len(request_id)})")
    if not request_id.isprintable():
        raise errors.InvalidArgument("header.request_id must be printable (no line breaks or control characters)")
    bare = type(header)()
    bare.CopyFrom(header)
    bare.ClearField("request_id")
    digest = hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()
    return UploadRequest(f"{team}/{request_id}", request_id, digest)


def _describe_model(staged: Staged) -> registry_pb2.ModelVersion:
    """Check the staged artifact parses as its declared format; describe it as a version."""
    header = staged.header
    try:
        version = inspection.describe_model(staged.path, header.format, header.architecture,
                                            header.task_outputs)
    except inspection.InvalidArtifact as exc:
        raise errors.InvalidArgument(str(exc)) from None
    version.model_name, version.sha256, version.size_bytes = header.model_name, staged.sha256, staged.size
    version.lineage.CopyFrom(header.lineage)
    version.metadata.update(header.metadata)
    return version


def _describe_dataset(staged: Staged) -> registry_pb2.Dataset:
    """Check the staged file is a dataset the registry reads; describe it as a dataset."""
    header = staged.header
    try:
        dataset = inspection.describe_dataset(staged.path)
    except inspection.InvalidArtifact as exc:
        raise errors.InvalidArgument(str(exc)) from None
    dataset.name, dataset.sha256, dataset.size_bytes = header.name, staged.sha256, staged.size
    dataset.metadata.update(header.metadata)
    return dataset
