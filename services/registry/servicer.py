"""Registry RPCs: validate, translate, call the store; uploads are staged and verified first.

Every record is stamped with its owner: the caller's team, from its API key (lambdascope.auth).
Alias moves also record who moved them (the key's id).
"""
from __future__ import annotations

import logging
import pathlib
import re

from lambdascope import architectures, auth, errors, inspection, quotas
from lambdascope.reports import MAX_PAGE_BYTES
from lambdascope.storage.objects import CHUNK, ObjectStore, content_key
from lambdascope.v1 import audit_pb2, models_pb2, registry_pb2, registry_pb2_grpc
from services.registry import gc, job_state, uploads
from services.registry.store import RegistryStore

log = logging.getLogger("lambdascope.registry")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,99}$")
VERSION_LIKE = re.compile(r"^(v|version)?[0-9]+$", re.IGNORECASE)
RESERVED_ALIASES = {"latest"}
TAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS = 128, 1024, 100
MAX_ARTIFACT_BYTES = 16 << 30
# Uploads at least this large go to the object store while they arrive (smaller ones gain
# nothing from the overlap and are stored after verification).
STREAM_AT_BYTES = 16 << 20


def _check_name(field: str, value: str) -> None:
    if not NAME.match(value):
        raise errors.InvalidArgument(
            f"{field} {value!r} is not a valid name: use 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '@', spaces or control characters; one '/' "
            "only in '<team>/<name>', a name another team shared)")


def _check_reference_name(field: str, value: str) -> None:
    """A name a team reads by: its own ("mlp") or one shared with it ("team-a/mlp")."""
    owner, _, name = value.rpartition("/")
    if owner:
        _check_name(field, owner)
    _check_name(field, name)


def _check_alias(value: str) -> None:
    if not ALIAS.match(value):
        raise errors.InvalidArgument(
            f"alias {value!r} is not a valid alias: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter")
    if VERSION_LIKE.match(value) or value.lower() in RESERVED_ALIASES:
        raise errors.InvalidArgument(
            f"alias {value!r} looks like a version number or 'latest', so 'name@{value}' would "
            "be ambiguous: choose a word such as 'production' or 'candidate'")


def _check_tags(field: str, tags: dict[str, str], remove: list[str] = ()) -> None:
    if len(tags) > MAX_TAGS:
        raise errors.InvalidArgument(f"{field}: at most {MAX_TAGS} tags per call")
    for key in [*tags, *remove]:
        if len(key) > MAX_TAG_KEY:
            raise errors.InvalidArgument(
                f"{field}: tag key {key[:40]!r}... is {len(key)} characters long; "
                f"the limit is {MAX_TAG_KEY}")
        if not TAG_KEY.match(key):
            raise errors.InvalidArgument(
                f"{field}: tag key {key!r} must start with a letter or digit and use only "
                "letters, digits and '.', '_', ':', '/', '-'")
    for key, value in tags.items():
        if len(value) > MAX_TAG_VALUE:
            raise errors.InvalidArgument(
                f"{field}: the value of tag {key!r} is {len(value)} characters long; the limit "
                f"is {MAX_TAG_VALUE}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise errors.InvalidArgument(f"{field}: the value of tag {key!r} contains control "
                                         "characters")


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path,
                 *, presign_seconds: int = 3600,
                 staging_ttl_seconds: float = 86400.0, metrics=None,
                 quotas: quotas.Quotas | None = None):
        self.store = store
        self.quotas = quotas
        self.metrics = metrics  # lambdascope.metrics.RegistryMetrics, or None
        self.objects = objects
        self.staging_dir = staging_dir
        self.presign_seconds = presign_seconds
        self.staging_ttl_seconds = staging_ttl_seconds

    @staticmethod
    def _team() -> str:
        """The caller's team: every record it reads or writes is that team's."""
        return auth.current().team

    @staticmethod
    def _actor() -> str:
        return auth.current().key_id

    def _own(self, field: str, value: str) -> str:
        """The name of a record the caller writes: always its own team's. "<team>/<name>" of
        another team is PERMISSION_DENIED, shared or not (and whether or not it exists)."""
        owner, _, name = value.rpartition("/")
        if owner:
            _check_name(field, owner)
        if owner and owner != self._team():
            raise errors.PermissionDenied(
                f"{field} {value!r} names team {owner!r}'s record: a team writes only its own "
                "(what another team shares with it is read-only)", reason="other_team")
        _check_name(field, name)
        return name

    # -- models ---------------------------------------------------------------------------

    def CreateModel(self, request, context):
        name = self._own("name", request.name)
        return self.store.create_model(name, request.description, self._team())

    def GetModel(self, request, context):
        _check_reference_name("name", request.name)
        return self.store.get_model(request.name, self._team())

    def ListModels(self, request, context):
        return self.store.list_models(request, self._team())

    def UploadModelVersion(self, request_iterator, context):
        staged = self._receive(request_iterator, self._check_model_header)
        try:
            version = self._checked(staged, lambda: self._inspect_model(staged))
            return self._commit(staged, lambda: self.store.add_version(
                version, dict(staged.header.tags), self._team()))
        finally:
            staged.discard()

    def GetModelVersion(self, request, context):
        return self.store.get_version(request.version_id, self._team())

    def ListModelVersions(self, request, context):
        if request.model_name:
            _check_reference_name("model_name", request.model_name)
        return self.store.search_versions(request, self._team(), model_name=request.model_name,
                                          job_id=request.job_id)

    def SearchModelVersions(self, request, context):
        _check_tags("tags", dict(request.tags), list(request.tag_keys))
        if request.model_name:
            _check_reference_name("model_name", request.model_name)
        if request.alias:
            _check_alias(request.alias)
        return self.store.search_versions(
            request, self._team(), model_name=request.model_name, tags=dict(request.tags),
            tag_keys=list(request.tag_keys), alias=request.alias, job_id=request.job_id,
            parent_version_id=request.parent_version_id,
            dataset_version_id=request.dataset_version_id, sha256=request.sha256,
            created_after=_seconds(request, "created_after"),
            created_before=_seconds(request, "created_before"),
            newest_first=request.newest_first)

    def DownloadModelVersion(self, request, context):
        version = self.store.get_version(request.version_id, self._team())
        return self._download(version.sha256, version.size_bytes)

    def DeleteModelVersion(self, request, context):
        sha = self.store.delete_version(request.version_id, self._team())
        return registry_pb2.DeleteResponse(artifact_freed=self._free(sha))

    def SetTags(self, request, context):
        _check_tags("set", dict(request.set), list(request.remove))
        target = request.WhichOneof("target")
        if target == "version_id":
            tags = self.store.set_version_tags(request.version_id, dict(request.set),
                                               request.remove, self._team())
        elif target == "dataset_id":
            tags = self.store.set_dataset_tags(request.dataset_id, dict(request.set),
                                               request.remove, self._team())
        else:
            raise errors.InvalidArgument("SetTags needs version_id or dataset_id")
        return registry_pb2.SetTagsResponse(tags=tags)

    # -- aliases --------------------------------------------------------------------------

    def SetAlias(self, request, context):
        name = self._own("model_name", request.model_name)
        _check_alias(request.alias)
        if not request.version_id:
            raise errors.InvalidArgument("version_id is required: the version the alias names")
        return self.store.set_alias(name, request.alias, request.version_id,
                                    self._actor(), self._team())

    def DeleteAlias(self, request, context):
        name = self._own("model_name", request.model_name)
        _check_alias(request.alias)
        return self.store.delete_alias(name, request.alias, self._actor(), self._team())

    def ListAliases(self, request, context):
        _check_reference_name("model_name", request.model_name)
        return registry_pb2.ListAliasesResponse(
            aliases=self.store.list_aliases(request.model_name, self._team()))

    def GetAliasHistory(self, request, context):
        _check_reference_name("model_name", request.model_name)
        _check_alias(request.alias)
        return self.store.alias_history(request, self._team())

    # -- downloads by URL, garbage ----------------------------------------------------------

    def GetDownloadUrl(self, request, context):
        target = request.WhichOneof("target")
        if target == "version_id":
            record = self.store.get_version(request.version_id, self._team())
        elif target == "dataset_id":
            record = self.store.get_dataset(request.dataset_id, self._team())
        else:
            raise errors.InvalidArgument("GetDownloadUrl needs version_id or dataset_id")
        if not 0 <= request.expires_seconds <= 7 * 24 * 3600:
            raise errors.InvalidArgument("expires_seconds must be between 0 (the default) and "
                                         f"604800 (7 days), got {request.expires_seconds}")
        expires = request.expires_seconds or self.presign_seconds
        url = self.objects.presigned_get(content_key(record.sha256), expires)
        if url is None:
            raise errors.FailedPrecondition(
                "this registry keeps artifacts in a local directory, which has no URLs: "
                "download through DownloadModelVersion / DownloadDataset")
        out = registry_pb2.DownloadUrl(url=url, sha256=record.sha256,
                                       size_bytes=record.size_bytes)
        out.expires_at.GetCurrentTime()
        out.expires_at.seconds += expires
        return out

    def CollectGarbage(self, request, context):
        return gc.collect(self.store, self.objects, self.staging_dir, self.staging_ttl_seconds,
                          dry_run=request.dry_run)

    # -- datasets -------------------------------------------------------------------------

    def UploadDataset(self, request_iterator, context):
        staged = self._receive(request_iterator, self._check_dataset_header)
        try:
            header = staged.header
            dataset = self._checked(staged, lambda: self._inspect_dataset(staged))
            dataset.name, dataset.sha256, dataset.size_bytes = header.name, staged.sha256, staged.size
            dataset.metadata.update(header.metadata)
            return self._commit(staged, lambda: self.store.add_dataset(
                dataset, dict(header.tags), self._team()))
        finally:
            staged.discard()

    def GetDataset(self, request, context):
        return self.store.get_dataset(request.dataset_id, self._team())

    def ListDatasets(self, request, context):
        if request.name:
            _check_reference_name("name", request.name)
        return self.store.list_datasets(request, self._team())

    def DownloadDataset(self, request, context):
        dataset = self.store.get_dataset(request.dataset_id, self._team())
        return self._download(dataset.sha256, dataset.size_bytes)

    def DeleteDataset(self, request, context):
        sha = self.store.delete_dataset(request.dataset_id, self._team())
        return registry_pb2.DeleteResponse(artifact_freed=self._free(sha))

    # -- grants ---------------------------------------------------------------------------

    def Share(self, request, context):
        kind, name, team = self._grant_request(request)
        return self.store.share(kind, name, team, self._team(), self._actor())

    def Unshare(self, request, context):
        kind, name, team = self._grant_request(request)
        return self.store.unshare(kind, name, team, self._team())

    def ListGrants(self, request, context):
        return self.store.list_grants(self._team())

    def _grant_request(self, request: registry_pb2.ShareRequest) -> tuple[str, str, str]:
        target = request.WhichOneof("target")
        if target is None:
            raise errors.InvalidArgument("name the model_name or the dataset_name to share")
        name = self._own(target, getattr(request, target))
        if not NAME.match(request.team):
            raise errors.InvalidArgument(f"team {request.team!r} is not a valid team name")
        return target.removesuffix("_name"), name, request.team

    # -- a job's own files -------------------------------------------------------------------

    def PutJobState(self, request_iterator, context):
        return job_state.put(self.objects, request_iterator, self.staging_dir)

    def GetJobState(self, request, context):
        return job_state.get(self.objects, request.name)

    def DeleteJobState(self, request, context):
        return job_state.delete(self.objects)

    # -- reports --------------------------------------------------------------------------

    def PutReport(self, request, context):
        if not request.report.model_version_id:
            raise errors.InvalidArgument("report.model_version_id is required")
        if len(request.html) > MAX_PAGE_BYTES:
            raise errors.InvalidArgument(f"html is {len(request.html):,} bytes; a report's page may have at most "
                                         f"{MAX_PAGE_BYTES:,}")
        report = audit_pb2.AuditReport()
        report.CopyFrom(request.report)
        return self.store.add_report(report, self._team(), request.html)

    def GetReport(self, request, context):
        return self.store.get_report(request.report_id, self._team())

    def GetReportPage(self, request, context):
        if not request.report_id:
            raise errors.InvalidArgument("report_id is required")
        html = self.store.get_report_page(request.report_id, self._team())
        return registry_pb2.ReportPage(report_id=request.report_id, html=html)

    def ListReports(self, request, context):
        return self.store.list_reports(request, self._team())

    # -- helpers --------------------------------------------------------------------------

    def _receive(self, requests, check_header) -> uploads.Staged:
        """Receive an upload into staging. Once the header passed, its content is pinned (a
        collector leaves it alone until the record commits or the upload fails) and, when it
        is new and large, streamed to the object store while it arrives."""
        pinned: list[str] = []

        def tee_for(header) -> uploads.StreamTee | None:
            sha = header.sha256.lower()
            self.store.pin_object(sha, header.size_bytes)
            pinned.append(sha)
            key = content_key(sha)
            if header.size_bytes < STREAM_AT_BYTES or self.objects.exists(key):
                return None
            return uploads.StreamTee(
                lambda stream: self.objects.put_stream(key, stream, header.size_bytes))

        try:
            staged = uploads.receive(requests, self.staging_dir, MAX_ARTIFACT_BYTES,
                                     check_header, tee_for)
        except BaseException:
            for sha in pinned:
                self._release(sha)
            raise
        if self.metrics is not None:
            self.metrics.uploaded(staged.size)
        return staged

    def _checked(self, staged: uploads.Staged, inspect):
        """Run an inspection of the staged bytes; on failure release their content."""
        try:
            return inspect()
        except BaseException:
            self._release(staged.sha256)
            raise

    def _commit(self, staged: uploads.Staged, record):
        """Make sure the verified bytes are stored (a no-op when they were streamed or existed)
        and insert their record, which releases the upload's pin in its transaction."""
        try:
            self.objects.put_file(content_key(staged.sha256), staged.path)
            return record()
        except BaseException:
            self._release(staged.sha256)
            raise

    def _release(self, sha256: str) -> None:
        """An upload ended without a record: unpin its content and remove it if nothing else
        uses it (bytes streamed for an upload that then failed its checks). A removal that
        fails is left to the collector: the upload's own error is what the caller hears."""
        self.store.unpin_object(sha256)
        try:
            self._free(sha256)
        except Exception:  # noqa: BLE001
            log.warning("could not remove the bytes of a failed upload; the collector will",
                        extra={"sha256": sha256}, exc_info=True)

    def _free(self, sha256: str) -> bool:
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

    def _inspect_dataset(self, staged: uploads.Staged) -> registry_pb2.Dataset:
        try:
            return inspection.describe_dataset(staged.path)
        except inspection.InvalidArtifact as exc:
            raise errors.InvalidArgument(str(exc)) from None

    def _check_room(self, header) -> None:
        """Refuse an upload that would take the team past its stored-bytes quota (content the
        team already holds adds nothing). Checked before the body arrives; two uploads racing
        may overshoot the quota by one upload."""
        team = self._team()
        limit = self.quotas.of(team).stored_bytes if self.quotas else 0
        if not limit:
            return
        held, has_it = self.store.team_bytes(team, header.sha256.lower())
        if not has_it and held + header.size_bytes > limit:
            raise quotas.exceeded(
                f"team {team!r} holds {held} bytes; this upload of {header.size_bytes} bytes "
                f"would pass its quota (stored_bytes = {limit}): delete versions or datasets "
                "it no longer needs (lambdascope rm), or ask an admin for more")

    def _check_dataset_header(self, header: registry_pb2.DatasetUploadHeader) -> None:
        header.name = self._own("header.name", header.name)
        self._check_room(header)
        _check_tags("header.tags", dict(header.tags))

    def _check_model_header(self, header: registry_pb2.ModelUploadHeader) -> None:
        """Refuse what the header alone shows to be wrong, before the body is stored."""
        header.model_name = self._own("header.model_name", header.model_name)
        _check_tags("header.tags", dict(header.tags))
        self._check_room(header)
        if header.task_outputs < 0:
            raise errors.InvalidArgument(
                f"header.task_outputs must be >= 0 (got {header.task_outputs})")
        if header.format not in (models_pb2.ARTIFACT_FORMAT_SAFETENSORS,
                                 models_pb2.ARTIFACT_FORMAT_TORCH_EXPORT):
            raise errors.InvalidArgument(
                "header.format must be ARTIFACT_FORMAT_SAFETENSORS (weights of a built-in "
                "architecture) or ARTIFACT_FORMAT_TORCH_EXPORT (a .pt2 archive)")
        if header.format == models_pb2.ARTIFACT_FORMAT_SAFETENSORS:
            if not header.HasField("architecture"):
                raise errors.InvalidArgument(
                    "header.architecture is required for safetensors weights: it says which "
                    "built-in architecture the weights belong to")
            try:
                architectures.validate_architecture(header.architecture)
            except ValueError as exc:
                raise errors.InvalidArgument(f"header.{exc}") from None
        self._check_lineage(header.lineage)

    def _inspect_model(self, staged: uploads.Staged) -> registry_pb2.ModelVersion:
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

    def _check_lineage(self, lineage: registry_pb2.Lineage) -> None:
        if lineage.parent_version_id:  # a reference is stored as the id it names now
            lineage.parent_version_id = self.store.get_version(lineage.parent_version_id,
                                                               self._team()).id
        if lineage.dataset_version_id:
            self.store.get_dataset(lineage.dataset_version_id, self._team())

    def _download(self, sha256: str, size: int):
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


def _seconds(request, field: str) -> float:
    return getattr(request, field).ToNanoseconds() / 1e9 if request.HasField(field) else 0.0


def binding(store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path, **options):
    from lambdascope.server import ServiceBinding

    servicer = RegistryServicer(store, objects, staging_dir, **options)
    return ServiceBinding(
        registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
        lambda server: registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server))
