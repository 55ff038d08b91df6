"""Registry RPCs: validate, translate, call the store; uploads are staged and verified first.

What a valid name, alias or tag is lives in checks.py; an artifact's bytes (upload, download,
freeing) in uploads.py; SQL in store.py. This module only translates between them and gRPC.

Every record is stamped with its owner: the caller's team, from its API key (lambdascope.auth).
Alias moves also record who moved them (the key's id).
"""
from __future__ import annotations

import pathlib

from lambdascope import auth, errors, quotas
from lambdascope.reports import MAX_PAGE_BYTES, page_check
from lambdascope.storage.objects import ObjectStore
from lambdascope.v1 import audit_pb2, registry_pb2, registry_pb2_grpc
from services.registry import checks, gc, job_state, uploads
from services.registry.store import RegistryStore


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path,
                 *, presign_seconds: int = 3600,
                 staging_ttl_seconds: float = 86400.0, metrics=None,
                 quotas: quotas.Quotas | None = None):
        self.store = store
        self.artifacts = uploads.Artifacts(store, objects, staging_dir, metrics=metrics,
                                           quotas=quotas)
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
        """The name of a record the caller writes: always its own team's."""
        return checks.own(field, value, self._team())

    # -- models ---------------------------------------------------------------------------

    def CreateModel(self, request, context):
        name = self._own("name", request.name)
        return self.store.create_model(name, request.description, self._team())

    def GetModel(self, request, context):
        checks.check_reference_name("name", request.name)
        return self.store.get_model(request.name, self._team())

    def ListModels(self, request, context):
        return self.store.list_models(request, self._team())

    def UploadModelVersion(self, request_iterator, context):
        return self.artifacts.upload_model(request_iterator, self._team())

    def GetModelVersion(self, request, context):
        return self.store.get_version(request.version_id, self._team())

    def ListModelVersions(self, request, context):
        if request.model_name:
            checks.check_reference_name("model_name", request.model_name)
        return self.store.search_versions(request, self._team(), model_name=request.model_name,
                                          job_id=request.job_id)

    def SearchModelVersions(self, request, context):
        checks.check_tags("tags", dict(request.tags), list(request.tag_keys))
        if request.model_name:
            checks.check_reference_name("model_name", request.model_name)
        if request.alias:
            checks.check_alias(request.alias)
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
        return self.artifacts.download(version.sha256, version.size_bytes)

    def DeleteModelVersion(self, request, context):
        sha = self.store.delete_version(request.version_id, self._team(),
                                        other_teams_reports=request.delete_other_teams_reports)
        return registry_pb2.DeleteResponse(artifact_freed=self.artifacts.free(sha))

    def SetTags(self, request, context):
        checks.check_tags("set", dict(request.set), list(request.remove))
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
        checks.check_alias(request.alias)
        if not request.version_id:
            raise errors.InvalidArgument("version_id is required: the version the alias names")
        return self.store.set_alias(name, request.alias, request.version_id,
                                    self._actor(), self._team())

    def DeleteAlias(self, request, context):
        name = self._own("model_name", request.model_name)
        checks.check_alias(request.alias)
        return self.store.delete_alias(name, request.alias, self._actor(), self._team())

    def ListAliases(self, request, context):
        checks.check_reference_name("model_name", request.model_name)
        return registry_pb2.ListAliasesResponse(
            aliases=self.store.list_aliases(request.model_name, self._team()))

    def GetAliasHistory(self, request, context):
        checks.check_reference_name("model_name", request.model_name)
        checks.check_alias(request.alias)
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
        url = self.artifacts.url(record.sha256, expires)
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
        return self.artifacts.upload_dataset(request_iterator, self._team())

    def GetDataset(self, request, context):
        return self.store.get_dataset(request.dataset_id, self._team())

    def ListDatasets(self, request, context):
        if request.name:
            checks.check_reference_name("name", request.name)
        return self.store.list_datasets(request, self._team())

    def DownloadDataset(self, request, context):
        dataset = self.store.get_dataset(request.dataset_id, self._team())
        return self.artifacts.download(dataset.sha256, dataset.size_bytes)

    def DeleteDataset(self, request, context):
        sha = self.store.delete_dataset(request.dataset_id, self._team())
        return registry_pb2.DeleteResponse(artifact_freed=self.artifacts.free(sha))

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
        if not checks.NAME.match(request.team):
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
        try:
            page_check.check_page(request.html)
        except page_check.PageRefused as exc:
            raise errors.InvalidArgument(f"html: {exc}") from None
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


def _seconds(request, field: str) -> float:
    return getattr(request, field).ToNanoseconds() / 1e9 if request.HasField(field) else 0.0


def binding(store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path, **options):
    from lambdascope.server import ServiceBinding

    servicer = RegistryServicer(store, objects, staging_dir, **options)
    return ServiceBinding(
        registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
        lambda server: registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server))
