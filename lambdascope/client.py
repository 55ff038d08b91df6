"""The Python SDK: one Client over the registry, trainer and estimator.

    client = Client()                      # finds the `lambdascope up` platform running here
    client = Client(data_dir="~/work/data")  # ... the one on that data dir, when several run
    client = Client("host:port")           # any service's address; it names the others
    version = client.upload_model("m.pt2", "my-model")
    data = client.upload_dataset("d.safetensors", "my-data")
    job = client.start_audit(version.id, data.id, AuditConfig(loss=LOSS_KIND_MSE))
    job = client.wait(job.id)
    report = client.get_report(job.output_ids[0])
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import pathlib
import random
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from lambdascope import auth, discovery, job_kinds
from lambdascope import tls as lambdascope_tls
from lambdascope.tls import ClientTLS
from lambdascope.discovery import PlatformNotFound
from lambdascope.v1 import (audit_pb2, estimator_pb2, estimator_pb2_grpc, identity_pb2,
                            identity_pb2_grpc, jobs_pb2, jobs_pb2_grpc, models_pb2, platform_pb2,
                            platform_pb2_grpc, registry_pb2, registry_pb2_grpc, trainer_pb2,
                            trainer_pb2_grpc)

CHUNK = 1 << 20
SERVICES = ("registry", "trainer", "estimator")
_RETRY = json.dumps({"methodConfig": [{
    "name": [{}],
    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.2s", "maxBackoff": "2s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]}}]})


def _channel(address: str, credentials: Callable[[], list[tuple[str, str]]],
             tls: ClientTLS | None) -> grpc.Channel:
    channel = lambdascope_tls.channel(address, tls, options=[
        ("grpc.service_config", _RETRY), ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", 8 * 2**20)])
    return grpc.intercept_channel(channel, _Credentials(credentials))


def _bearer(api_key: str) -> Callable[[], list[tuple[str, str]]]:
    metadata = [("authorization", f"Bearer {api_key}")] if api_key else []
    return lambda: metadata


def describe(address: str, api_key: str = "", timeout: float = 10.0,
             tls: ClientTLS | None = None) -> dict[str, str]:
    """Ask the service at `address` where the platform's services are; a service that cannot be
    reached (refused, not answering, a TLS handshake that failed) is a PlatformNotFound that
    says so, not a raw status."""
    try:
        with _channel(address, _bearer(api_key), tls) as channel:
            reply = platform_pb2_grpc.PlatformStub(channel).Describe(
                platform_pb2.DescribeRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise
        raise PlatformNotFound(
            f"cannot reach a lambdascope service at {address} ({exc.code().name.lower()}: "
            f"{(exc.details() or '').splitlines()[0][:160]}): check the address and that the service runs, "
            "or start a local platform with `lambdascope up`; a server that serves TLS needs "
            "--ca (LAMBDASCOPE_TLS_CA), and one that requires client certificates --cert and "
            "--key") from None
    endpoints = {e.name: e.address for e in reply.endpoints}
    endpoints.setdefault(reply.service, address)
    return endpoints


def resolve_endpoints(server: str | None = None, api_key: str = "", data_dir: str | None = None,
                      tls: ClientTLS | None = None, **explicit: str | None
                      ) -> tuple[dict[str, str], str]:
    """(addresses, the admin key of a discovered local platform or ""). Addresses from: explicit
    arguments (alone, when no `server` is given), `server` (or LAMBDASCOPE_SERVER) asked via
    Describe, LAMBDASCOPE_<SERVICE>_ADDRESS variables, then the platform `lambdascope up` runs on
    ``data_dir`` (or the only one running; lambdascope.discovery)."""
    given = {k: v for k, v in explicit.items() if v}
    if given and not server:
        return given, ""
    found: dict[str, str] = {}
    local_key = ""
    server = server or os.environ.get("LAMBDASCOPE_SERVER")
    if server:
        found.update(describe(server, api_key, tls=tls))
    else:
        for name in SERVICES:
            if os.environ.get(f"LAMBDASCOPE_{name.upper()}_ADDRESS"):
                found[name] = os.environ[f"LAMBDASCOPE_{name.upper()}_ADDRESS"]
        if not found:
            entry = discovery.find(data_dir)
            found.update(entry["endpoints"])
            local_key = discovery.admin_key(entry["data_dir"])
    found.update(given)
    return found, local_key


class Client:
    def __init__(self, server: str | None = None, *, registry: str | None = None,
                 trainer: str | None = None, estimator: str | None = None,
                 api_key: str | None = None, timeout: float = 60.0, data_dir: str | None = None,
                 forward_caller: bool = False, tls: ClientTLS | None = None):
        """api_key: sent as `authorization: Bearer <key>`; default LAMBDASCOPE_API_KEY, else the
        admin key of the local platform found by discovery. forward_caller: a service's client
        that calls for the caller of the RPC it serves, with that caller's own key
        (lambdascope.auth.forwarded); it has no key of its own. tls: how to reach servers that
        serve TLS (lambdascope.tls); default: LAMBDASCOPE_TLS_CA/_CLIENT_CERT/_CLIENT_KEY, and
        plaintext when those are unset."""
        api_key = api_key if api_key is not None else os.environ.get("LAMBDASCOPE_API_KEY", "")
        self.tls = tls if tls is not None else ClientTLS.from_env()
        self.endpoints, local_key = resolve_endpoints(server, api_key, data_dir, self.tls,
                                                      registry=registry, trainer=trainer,
                                                      estimator=estimator)
        self.api_key = api_key or local_key
        self._credentials = auth.forwarded if forward_caller else _bearer(self.api_key)
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            address = self.endpoints.get(service)
            if not address:
                raise PlatformNotFound(
                    f"no address for the {service} service: start the platform with "
                    "`lambdascope up`, or pass --server HOST:PORT of any lambdascope service")
            self._channels[service] = _channel(address, self._credentials, self.tls)
        return self._channels[service]

    @property
    def registry(self) -> registry_pb2_grpc.RegistryStub:
        return registry_pb2_grpc.RegistryStub(self.channel("registry"))

    @property
    def trainer(self) -> trainer_pb2_grpc.TrainerStub:
        return trainer_pb2_grpc.TrainerStub(self.channel("trainer"))

    @property
    def estimator(self) -> estimator_pb2_grpc.EstimatorStub:
        return estimator_pb2_grpc.EstimatorStub(self.channel("estimator"))

    @property
    def identity(self) -> identity_pb2_grpc.IdentityStub:
        return identity_pb2_grpc.IdentityStub(self.channel("registry"))

    # -- identities (served by the registry) -----------------------------------------------

    def whoami(self) -> identity_pb2.Principal:
        return self.identity.WhoAmI(identity_pb2.WhoAmIRequest(), timeout=self.timeout)

    def create_team(self, name: str) -> identity_pb2.Team:
        return self.identity.CreateTeam(identity_pb2.CreateTeamRequest(name=name),
                                        timeout=self.timeout)

    def list_teams(self) -> list[identity_pb2.Team]:
        return list(self.identity.ListTeams(identity_pb2.ListTeamsRequest(),
                                            timeout=self.timeout).teams)

    def create_key(self, team: str, role: int, expires_days: int = 0,
                   description: str = "", user: str = "") -> identity_pb2.CreatedKey:
        return self.identity.CreateKey(identity_pb2.CreateKeyRequest(
            team=team, role=role, expires_days=expires_days, description=description, user=user),
            timeout=self.timeout)

    def list_keys(self, team: str = "", include_revoked: bool = False) -> list[identity_pb2.ApiKey]:
        return list(self.identity.ListKeys(identity_pb2.ListKeysRequest(
            team=team, include_revoked=include_revoked), timeout=self.timeout).keys)

    def revoke_key(self, key_id: str) -> identity_pb2.ApiKey:
        return self.identity.RevokeKey(identity_pb2.RevokeKeyRequest(key_id=key_id),
                                       timeout=self.timeout)

    def issue_job_credential(self, job_id: str, expires_seconds: int) -> str:
        return self.identity.IssueJobCredential(identity_pb2.IssueJobCredentialRequest(
            job_id=job_id, expires_seconds=expires_seconds), timeout=self.timeout).secret

    def audit_events(self, *, team: str = "", denied_only: bool = False, since: float = 0.0,
                     limit: int = 100) -> list[platform_pb2.AuditEvent]:
        """The audit trail of the three services merged, newest first (an admin key)."""
        request = platform_pb2.ListAuditEventsRequest(team=team, denied_only=denied_only,
                                                      page_size=min(limit, 1000))
        if since:
            request.since.FromNanoseconds(int(since * 1e9))
        events: list[platform_pb2.AuditEvent] = []
        for service in SERVICES:
            stub = platform_pb2_grpc.PlatformStub(self.channel(service))
            pages = platform_pb2.ListAuditEventsRequest()
            pages.CopyFrom(request)  # (_pages moves its page token along)
            for count, event in enumerate(self._pages(stub.ListAuditEvents, pages, "events"), 1):
                events.append(event)
                if count >= limit:
                    break
        events.sort(key=lambda e: (e.at.ToNanoseconds(), e.id), reverse=True)
        return events[:limit]

    # -- grants (read-only sharing between teams) -------------------------------------------

    def share(self, team: str, *, model: str = "", dataset: str = "") -> registry_pb2.Grant:
        """Let `team` read one of the caller's team's models (all versions) or datasets; it
        names it "<your team>/<name>"."""
        return self.registry.Share(_share_request(team, model, dataset), timeout=self.timeout)

    def unshare(self, team: str, *, model: str = "", dataset: str = "") -> registry_pb2.Grant:
        return self.registry.Unshare(_share_request(team, model, dataset), timeout=self.timeout)

    def list_grants(self) -> registry_pb2.ListGrantsResponse:
        return self.registry.ListGrants(registry_pb2.ListGrantsRequest(), timeout=self.timeout)

    # -- registry -------------------------------------------------------------------------

    def upload_model(self, path: str | os.PathLike, model_name: str, *,
                     format: int | None = None, architecture: models_pb2.Architecture | None = None,
                     task_outputs: int = 0, lineage: registry_pb2.Lineage | None = None,
                     metadata: dict[str, str] | None = None,
                     tags: dict[str, str] | None = None,
                     request_id: str | None = None) -> registry_pb2.ModelVersion:
        """Upload a .pt2 archive, or safetensors weights of a built-in `architecture`. Retried
        while the registry is unavailable, under one request id (a fresh one unless given), so
        an attempt that committed before its answer was lost is not uploaded twice."""
        path = pathlib.Path(path)
        format = _format_of(path) if format is None else format
        sha, size = file_digest(path)
        header = registry_pb2.ModelUploadHeader(
            model_name=model_name, format=format, architecture=architecture,
            task_outputs=task_outputs, lineage=lineage, metadata=metadata or {},
            tags=tags or {}, sha256=sha, size_bytes=size, request_id=request_id or str(uuid.uuid4()))
        return self._upload(self.registry.UploadModelVersion, path, registry_pb2.UploadModelVersionRequest,
                            header)

    def find_model_version(self, path: str | os.PathLike, model_name: str, *, format: int | None = None,
                           architecture: models_pb2.Architecture | None = None,
                           task_outputs: int = 0) -> registry_pb2.ModelVersion | None:
        """The newest version of ``model_name`` holding exactly this file's bytes, uploaded with the
        same format, architecture and task outputs (so uploading again would only add a copy)."""
        path = pathlib.Path(path)
        format = _format_of(path) if format is None else format
        sha, _size = file_digest(path)
        try:
            found = self.registry.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(
                model_name=model_name, sha256=sha, newest_first=True, page_size=100), timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # no model of that name yet
                return None
            raise
        wanted = architecture or models_pb2.Architecture()
        for version in found.versions:
            if version.format == format and version.architecture == wanted and \
                    version.task_outputs == task_outputs:
                return version
        return None

    def find_dataset(self, path: str | os.PathLike, name: str) -> registry_pb2.Dataset | None:
        """The newest dataset named ``name`` holding exactly this file's bytes."""
        sha, _size = file_digest(pathlib.Path(path))
        found = self.registry.ListDatasets(registry_pb2.ListDatasetsRequest(name=name, sha256=sha),
                                           timeout=self.timeout)
        return found.datasets[-1] if found.datasets else None

    # -- a job's own files (a job's credential only: lambdascope.job_state) -----------------

    def put_job_state(self, name: str, path: str | os.PathLike) -> registry_pb2.JobStateFile:
        """Replace the running job's file `name` with the file at `path`. Streamed again while the
        registry is unavailable, as `upload_model` (a repeat replaces the file whole again)."""
        path = pathlib.Path(path)
        sha, size = file_digest(path)
        header = registry_pb2.JobStateHeader(name=name, sha256=sha, size_bytes=size)
        return self._upload(self.registry.PutJobState, path, registry_pb2.PutJobStateRequest, header)

    def get_job_state(self, name: str, dest: str | os.PathLike) -> pathlib.Path | None:
        """Write the running job's file `name` to `dest`; None when the job has none. Read again
        from the start while the registry answers UNAVAILABLE, for up to the client's timeout."""
        dest = pathlib.Path(dest)
        return _while_unavailable(time.monotonic() + self.timeout, lambda _left: self._read_job_state(name, dest))

    def _read_job_state(self, name: str, dest: pathlib.Path) -> pathlib.Path | None:
        chunks = self.registry.GetJobState(registry_pb2.GetJobStateRequest(name=name), timeout=None)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with open(tmp, "wb") as out:
                expected = -1
                for i, message in enumerate(chunks):
                    if i == 0:
                        expected = message.size_bytes
                    out.write(message.chunk)
        except grpc.RpcError as exc:
            tmp.unlink(missing_ok=True)
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        received = tmp.stat().st_size
        if received != expected:
            tmp.unlink()
            raise ConnectionError(f"job state {name!r}: received {received} of {expected} bytes")
        tmp.replace(dest)
        return dest

    def delete_job_state(self) -> int:
        """Remove every file of the running job; how many there were."""
        return self.registry.DeleteJobState(registry_pb2.DeleteJobStateRequest(),
                                            timeout=self.timeout).files_removed

    def upload_dataset(self, path: str | os.PathLike, name: str,
                       metadata: dict[str, str] | None = None,
                       tags: dict[str, str] | None = None,
                       request_id: str | None = None) -> registry_pb2.Dataset:
        """Upload a safetensors file holding tensors `x` and `y`; retried as `upload_model`."""
        path = pathlib.Path(path)
        sha, size = file_digest(path)
        header = registry_pb2.DatasetUploadHeader(name=name, metadata=metadata or {}, tags=tags or {},
                                                  sha256=sha, size_bytes=size,
                                                  request_id=request_id or str(uuid.uuid4()))
        return self._upload(self.registry.UploadDataset, path, registry_pb2.UploadDatasetRequest, header)

    def _upload(self, call: Callable[..., Any], path: pathlib.Path, message_type: Any, header: Any) -> Any:
        """Stream `path` under `header`, again from the start while the registry answers
        UNAVAILABLE (restarting, its database or object store down), until the transfer's
        deadline. A stream cannot be replayed by the channel's retry policy or the
        interceptor; a repeat is safe (an upload's header carries its request id, a job's file
        is replaced whole)."""
        return _while_unavailable(time.monotonic() + self._transfer_seconds(header.size_bytes),
                                  lambda left: call(_upload_stream(path, message_type, header), timeout=left))

    def download_model_version(self, version_id: str, dest: str | os.PathLike, *,
                               via: str = "auto") -> pathlib.Path:
        """Write a version's artifact to `dest` (atomically, its size and sha256 checked).
        via: "stream" through the registry; "url" straight from the object store with a
        presigned URL (FAILED_PRECONDITION when the registry keeps a local directory); "auto"
        the URL when the registry hands one out and this machine reaches it, else the stream."""
        return self._fetch(via, {"version_id": version_id}, pathlib.Path(dest),
                           lambda: self.registry.DownloadModelVersion(
                               registry_pb2.DownloadModelVersionRequest(version_id=version_id)))

    def download_dataset(self, dataset_id: str, dest: str | os.PathLike, *,
                         via: str = "auto") -> pathlib.Path:
        """Write a dataset's file to `dest`; `via` as for download_model_version."""
        return self._fetch(via, {"dataset_id": dataset_id}, pathlib.Path(dest),
                           lambda: self.registry.DownloadDataset(
                               registry_pb2.DownloadDatasetRequest(dataset_id=dataset_id)))

    def _fetch(self, via: str, target: dict[str, str], dest: pathlib.Path,
               stream: Callable[[], Iterator[registry_pb2.DownloadChunk]]) -> pathlib.Path:
        if via not in ("auto", "stream", "url"):
            raise ValueError(f"via must be 'auto', 'stream' or 'url', not {via!r}")
        if via != "stream":
            try:
                url = self.registry.GetDownloadUrl(registry_pb2.GetDownloadUrlRequest(**target),
                                                   timeout=self.timeout)
            except grpc.RpcError as exc:
                if via == "url" or exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
            else:
                try:
                    return _download_url(url, dest)
                except (OSError, http.client.HTTPException):
                    if via == "url":
                        raise
                    # The store is not reachable from here (a cluster-internal name, a
                    # network policy) or sent bad bytes: the registry relays them instead.
        return _download(stream(), dest)

    def _pages(self, call: Callable[..., Any], request: Any, field: str) -> Iterator[Any]:
        """Every item of a paged list call: ``field`` of each page, following next_page_token."""
        while True:
            page = call(request, timeout=self.timeout)
            yield from getattr(page, field)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def get_model_version(self, version_id: str) -> registry_pb2.ModelVersion:
        return self.registry.GetModelVersion(
            registry_pb2.GetModelVersionRequest(version_id=version_id), timeout=self.timeout)

    def list_model_versions(self, model_name: str, job_id: str = ""
                            ) -> Iterator[registry_pb2.ModelVersion]:
        """Every version of `model_name` (only those a training job produced, given job_id)."""
        return self._pages(self.registry.ListModelVersions, registry_pb2.ListModelVersionsRequest(
            model_name=model_name, job_id=job_id), "versions")

    def search_model_versions(self, **filters: Any) -> Iterator[registry_pb2.ModelVersion]:
        """Every version matching the filters of SearchModelVersionsRequest (tags, alias,
        job_id, parent_version_id, dataset_version_id, created_after, ...), page by page."""
        return self._pages(self.registry.SearchModelVersions, registry_pb2.SearchModelVersionsRequest(**filters),
                           "versions")

    def list_reports(self, model_version: str = "") -> Iterator[audit_pb2.AuditReport]:
        """Audit reports, oldest first: all, or those of one model version (an id or "name/3",
        "name@alias", ...)."""
        return self._pages(self.registry.ListReports, registry_pb2.ListReportsRequest(model_version_id=model_version),
                           "reports")

    def list_datasets(self, name: str = "") -> Iterator[registry_pb2.Dataset]:
        """Datasets, oldest first: all, or the versions uploaded under one name."""
        return self._pages(self.registry.ListDatasets, registry_pb2.ListDatasetsRequest(name=name), "datasets")

    def set_alias(self, model_name: str, alias: str, version: str) -> registry_pb2.Alias:
        """Point `model_name@alias` at a version (an id or "name/3", "name/latest", ...)."""
        return self.registry.SetAlias(registry_pb2.SetAliasRequest(
            model_name=model_name, alias=alias, version_id=version), timeout=self.timeout)

    def delete_alias(self, model_name: str, alias: str) -> registry_pb2.Alias:
        return self.registry.DeleteAlias(registry_pb2.DeleteAliasRequest(
            model_name=model_name, alias=alias), timeout=self.timeout)

    def alias_history(self, model_name: str, alias: str) -> list[registry_pb2.AliasEvent]:
        return list(self._pages(self.registry.GetAliasHistory,
                                registry_pb2.GetAliasHistoryRequest(model_name=model_name, alias=alias), "events"))

    def set_tags(self, *, version_id: str = "", dataset_id: str = "",
                 set: dict[str, str] | None = None, remove: list[str] | None = None
                 ) -> dict[str, str]:
        request = registry_pb2.SetTagsRequest(set=set or {}, remove=remove or [])
        if version_id:
            request.version_id = version_id
        if dataset_id:
            request.dataset_id = dataset_id
        return dict(self.registry.SetTags(request, timeout=self.timeout).tags)

    def delete_model_version(self, version: str, *, other_teams_reports: bool = False) -> bool:
        """Delete a version; True when its artifact's bytes were freed. Refused while other
        teams' audit reports are about it, unless ``other_teams_reports`` (they go with it)."""
        return self.registry.DeleteModelVersion(registry_pb2.DeleteModelVersionRequest(
            version_id=version, delete_other_teams_reports=other_teams_reports),
            timeout=self.timeout).artifact_freed

    def _transfer_seconds(self, size: int) -> float:
        """The deadline of a transfer of `size` bytes: the client's timeout plus a second per
        MiB (one that slows below 1 MiB/s is given up rather than left hanging)."""
        return self.timeout + size / float(1 << 20)

    def delete_dataset(self, dataset_id: str) -> bool:
        return self.registry.DeleteDataset(registry_pb2.DeleteDatasetRequest(
            dataset_id=dataset_id), timeout=self.timeout).artifact_freed

    def collect_garbage(self, dry_run: bool = False) -> registry_pb2.CollectGarbageResponse:
        return self.registry.CollectGarbage(registry_pb2.CollectGarbageRequest(dry_run=dry_run),
                                            timeout=max(self.timeout, 3600.0))

    def get_dataset(self, dataset_id: str) -> registry_pb2.Dataset:
        return self.registry.GetDataset(registry_pb2.GetDatasetRequest(dataset_id=dataset_id),
                                        timeout=self.timeout)

    def put_report(self, report: audit_pb2.AuditReport, html: bytes = b"") -> audit_pb2.AuditReport:
        """Store a report (with its HTML page, when given, in the same transaction)."""
        return self.registry.PutReport(registry_pb2.PutReportRequest(report=report, html=html),
                                       timeout=self.timeout + len(html) / 2**20)

    def dataset_digests(self, dataset_ids: Iterable[str]) -> dict[str, str]:
        """The sha256 of each dataset's bytes, by id: the same data can be registered under two
        names (each training job registers its split), and comparisons should know."""
        return {i: self.get_dataset(i).sha256 for i in set(dataset_ids) if i}

    def get_report_page(self, report_id: str) -> bytes:
        """The report's stored HTML page (NOT_FOUND when it has none)."""
        return self.registry.GetReportPage(registry_pb2.GetReportRequest(report_id=report_id),
                                           timeout=self.timeout).html

    def get_report(self, report_id: str) -> audit_pb2.AuditReport:
        return self.registry.GetReport(registry_pb2.GetReportRequest(report_id=report_id),
                                       timeout=self.timeout)

    # -- jobs -----------------------------------------------------------------------------

    def start_audit(self, model_version: str | list[str], dataset_id: str,
                    config: audit_pb2.AuditConfig, request_id: str | None = None) -> jobs_pb2.Job:
        """Audit one model version, or several in order (LLC over training: one report each)."""
        request = estimator_pb2.StartAuditRequest(
            request_id=request_id or str(uuid.uuid4()), dataset_id=dataset_id, config=config)
        if isinstance(model_version, str):
            request.model_version_id = model_version
        else:
            request.model_version_ids[:] = model_version
        return self.estimator.StartAudit(request, timeout=self.timeout)

    def check_audit(self, config: audit_pb2.AuditConfig, model_version: str | list[str] | None = None,
                    dataset_id: str = "") -> None:
        """Raise (INVALID_ARGUMENT, NOT_FOUND) if the estimator would refuse this audit; starts
        nothing. Versions and dataset are checked (with their fit) only where given."""
        request = estimator_pb2.StartAuditRequest(dataset_id=dataset_id, config=config, validate_only=True)
        if isinstance(model_version, str):
            request.model_version_id = model_version
        elif model_version:
            request.model_version_ids[:] = model_version
        self.estimator.StartAudit(request, timeout=self.timeout)

    def start_training(self, spec: trainer_pb2.TrainSpec,
                       request_id: str | None = None) -> jobs_pb2.Job:
        return self.trainer.StartTraining(trainer_pb2.StartTrainingRequest(
            request_id=request_id or str(uuid.uuid4()), spec=spec), timeout=self.timeout)

    def jobs_stub(self, job_id_or_kind: str) -> jobs_pb2_grpc.JobsStub:
        """The Jobs service of the server that owns a job (its id starts with its kind)."""
        return jobs_pb2_grpc.JobsStub(self.channel(job_kinds.service_of(job_id_or_kind)))

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        return self.jobs_stub(job_id).GetJob(jobs_pb2.GetJobRequest(job_id=job_id),
                                             timeout=self.timeout)

    def cancel_job(self, job_id: str) -> jobs_pb2.Job:
        return self.jobs_stub(job_id).CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id),
                                                timeout=self.timeout)

    def list_jobs(self, kind: str, state: int = 0, page_size: int = 0) -> Iterator[jobs_pb2.Job]:
        return self._pages(self.jobs_stub(kind).ListJobs, jobs_pb2.ListJobsRequest(page_size=page_size, state=state),
                           "jobs")

    def watch(self, job_id: str, *, reconnect_for: float = 300.0) -> Iterator[jobs_pb2.JobEvent]:
        """The job's events until it ends. A stream cut by its service going away (a restart,
        a crash, a network hiccup) is opened again with backoff, for up to `reconnect_for`
        seconds without a connection, and goes on from the job's state then; so does one that
        ended with the job INTERRUPTED (its service stopped: the job continues when it starts
        again). An event repeated across a reconnect is not yielded twice."""
        last, waiting_since, delay = None, None, 0.2
        while True:
            try:
                for event in self.jobs_stub(job_id).WatchJob(
                        jobs_pb2.WatchJobRequest(job_id=job_id)):
                    if event.state != jobs_pb2.JOB_STATE_INTERRUPTED:
                        waiting_since, delay = None, 0.2
                    seen = (event.state, event.step, event.message)
                    if seen != last:
                        last = seen
                        yield event
                if last is not None and last[0] != jobs_pb2.JOB_STATE_INTERRUPTED:
                    return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                failure: grpc.RpcError | None = exc
            else:
                failure = None
            now = time.monotonic()
            waiting_since = waiting_since if waiting_since is not None else now
            if now - waiting_since > reconnect_for:
                if failure is not None:
                    raise failure
                return  # still INTERRUPTED: its service has not come back
            time.sleep(delay)
            delay = min(2 * delay, 5.0)

    def wait(self, job_id: str, on_event: Callable[[jobs_pb2.JobEvent], None] | None = None
             ) -> jobs_pb2.Job:
        """Follow a job's events until it ends; return its final record."""
        for event in self.watch(job_id):
            if on_event is not None:
                on_event(event)
        return self.get_job(job_id)


def _share_request(team: str, model: str, dataset: str) -> registry_pb2.ShareRequest:
    if bool(model) == bool(dataset):
        raise ValueError("share or unshare either a model or a dataset")
    return registry_pb2.ShareRequest(team=team, model_name=model) if model else \
        registry_pb2.ShareRequest(team=team, dataset_name=dataset)


def _format_of(path: pathlib.Path) -> int:
    """The artifact format a file's name says: .pt2 is a torch.export archive, else safetensors."""
    return models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT if path.suffix == ".pt2" else models_pb2.ARTIFACT_FORMAT_SAFETENSORS


def file_digest(path: pathlib.Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


MAX_RETRY_DELAY = 5.0  # seconds: the longest pause between two tries of a call UNAVAILABLE


def _retry_pause(deadline: float, delay: float) -> float | None:
    """A jittered pause of about `delay` seconds before another try, None when it would end past
    `deadline` (time.monotonic())."""
    pause = delay * (0.5 + random.random())
    return None if time.monotonic() + pause >= deadline else pause


def _while_unavailable(deadline: float, attempt: Callable[[float], Any]) -> Any:
    """``attempt(seconds left)``, again from the start after jittered pauses while it fails
    UNAVAILABLE and `deadline` (time.monotonic()) leaves time for another try. A try that the
    deadline cut short after an UNAVAILABLE raises that UNAVAILABLE: it says why."""
    delay, unavailable = 0.5, None
    while True:
        try:
            return attempt(max(0.001, deadline - time.monotonic()))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and unavailable is not None:
                raise unavailable from None
            pause = _retry_pause(deadline, delay)
            if exc.code() != grpc.StatusCode.UNAVAILABLE or pause is None:
                raise
            unavailable = exc
        time.sleep(pause)
        delay = min(2 * delay, MAX_RETRY_DELAY)


def _upload_stream(path: pathlib.Path, message_type: Any, header: Any) -> Iterator[Any]:
    yield message_type(header=header)
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            yield message_type(chunk=chunk)


def _download(chunks: Iterator[registry_pb2.DownloadChunk], dest: pathlib.Path) -> pathlib.Path:
    """Write a registry download stream to `dest` (its first message names sha256 and size)."""
    expected: list[tuple[str, int]] = []

    def data() -> Iterator[bytes]:
        for message in chunks:
            if not expected:
                expected.append((message.sha256, message.size_bytes))
            yield message.chunk

    return _write_checked(data(), lambda: expected[0] if expected else None, dest)


def _download_url(url: registry_pb2.DownloadUrl, dest: pathlib.Path,
                  timeout: float = 10.0) -> pathlib.Path:
    """Write the object behind a presigned URL to `dest`, checked against the registry's
    record. OSError when the store cannot be reached or sends other bytes."""
    with urllib.request.urlopen(url.url, timeout=timeout) as response:
        return _write_checked(iter(lambda: response.read(CHUNK), b""),
                              lambda: (url.sha256, url.size_bytes), dest)


def _write_checked(data: Iterator[bytes], expected: Callable[[], tuple[str, int] | None],
                   dest: pathlib.Path) -> pathlib.Path:
    """Write `data` to `dest` atomically (a partial file, renamed once size and sha256 match
    `expected()`, asked after the last byte); nothing is left at `dest` otherwise."""
    digest, size = hashlib.sha256(), 0
    partial = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "wb") as out:
            for chunk in data:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        want = expected()
        if want is None or (digest.hexdigest(), size) != tuple(want):
            raise IOError(f"download of {dest.name} is corrupt: got {size} bytes with sha256 "
                          f"{digest.hexdigest()}, expected {want}")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


class _Credentials(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the metadata `credentials()` gives (`authorization: Bearer <key>`) to every call,
    and keeps retrying a unary call its service did not answer (UNAVAILABLE: restarting, or its
    database or object store down) until the call's deadline, with jittered backoff, after the
    channel's own retry policy (a few quick attempts) gave up. Calls that would not be safe to
    repeat (minting keys) are not retried this way; starts carry request ids, so they are.
    Describe (finding the platform) fails fast: a wrong address should be said at once."""

    NOT_RETRIED = {"CreateKey", "IssueJobCredential", "Describe"}

    def __init__(self, credentials: Callable[[], list[tuple[str, str]]]):
        self.credentials = credentials

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), *self.credentials()])

    def intercept_unary_unary(self, continuation, details, request):
        details = self._details(details)
        if details.timeout is None or details.method.rsplit("/", 1)[-1] in self.NOT_RETRIED:
            return continuation(details, request)
        deadline, delay = time.monotonic() + details.timeout, 0.5
        while True:
            outcome = continuation(details._replace(timeout=max(0.001, deadline - time.monotonic())),
                                   request)
            pause = _retry_pause(deadline, delay)
            if outcome.code() != grpc.StatusCode.UNAVAILABLE or pause is None:
                return outcome
            time.sleep(pause)
            delay = min(2 * delay, MAX_RETRY_DELAY)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)
