"""A running job's own files, kept for its worker (Registry.PutJobState/GetJobState/DeleteJobState).

A training run's resume state and an audit's chain snapshots live under
`jobstate/<team>/<job id>/<name>` in the registry's object store. The caller must be a job's
credential (lambdascope.auth: a key issued for one job of one team), and reaches only its own
job's files: workers hold no storage credentials, so a worker cannot read another team's bytes.
Each file is replaced whole (a rename locally, one PUT or a completed multipart upload on S3).
"""
from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

from lambdascope import auth, errors
from lambdascope.names import RECORD as NAME  # a job state file is named as any record is
from lambdascope.storage.objects import CHUNK, ObjectStore
from lambdascope.v1 import registry_pb2
from services.registry import uploads

PREFIX = "jobstate/"
MAX_BYTES = 8 << 30


def _own_prefix() -> str:
    caller = auth.current()
    if not caller.job_id:
        raise errors.PermissionDenied(
            "job state belongs to a job's worker: only a job's credential reads or writes it",
            reason="not_a_job")
    return f"{PREFIX}{caller.team}/{caller.job_id}/"


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise errors.InvalidArgument(f"job state name {name!r} is not valid: use 1-200 letters, "
                                     "digits, '.', '_' or '-', starting with a letter or digit")


def put(objects: ObjectStore, requests: Iterator[registry_pb2.PutJobStateRequest],
        staging_dir: pathlib.Path) -> registry_pb2.JobStateFile:
    prefix = _own_prefix()
    staged = uploads.receive(requests, staging_dir, MAX_BYTES, lambda h: _check_name(h.name))
    try:
        with open(staged.path, "rb") as src:  # put_stream replaces (put_file keeps what is there)
            objects.put_stream(prefix + staged.header.name, src, staged.size)
    finally:
        staged.discard()
    return registry_pb2.JobStateFile(name=staged.header.name, size_bytes=staged.size)


def get(objects: ObjectStore, name: str) -> Iterator[registry_pb2.DownloadChunk]:
    _check_name(name)
    key = _own_prefix() + name
    info = objects.stat(key)
    if info is None:
        raise errors.NotFound(f"this job has no state named {name!r}")
    yield registry_pb2.DownloadChunk(size_bytes=info.size)
    for chunk in objects.read_chunks(key, CHUNK):
        yield registry_pb2.DownloadChunk(chunk=chunk)


def delete(objects: ObjectStore) -> registry_pb2.DeleteJobStateResponse:
    prefix = _own_prefix()
    removed = 0
    for info in list(objects.list(prefix)):
        objects.delete(info.key)
        removed += 1
    return registry_pb2.DeleteJobStateResponse(files_removed=removed)


def collect(objects: ObjectStore, job_is_live, min_age: float, *, dry_run: bool) -> int:
    """Remove the files of jobs whose credential is no longer live (`job_is_live(job_id)`),
    older than `min_age` seconds; the number of files (that would be) removed."""
    now, removed, live = time.time(), 0, {}
    for info in list(objects.list(PREFIX)):
        parts = info.key[len(PREFIX):].split("/")
        if len(parts) != 3 or now - info.modified < min_age:
            continue
        job_id = parts[1]
        if job_id not in live:
            live[job_id] = job_is_live(job_id)
        if not live[job_id]:
            if not dry_run:
                objects.delete(info.key)
            removed += 1
    return removed
