"""Registry RPCs: validate, translate, call the store; uploads are staged and verified first."""
from __future__ import annotations

import pathlib
import re

import grpc

from lambdascope import architectures, artifacts, errors
from lambdascope.storage.objects import CHUNK, ObjectStore, content_key
from lambdascope.v1 import audit_pb2, models_pb2, registry_pb2, registry_pb2_grpc
from services.registry import uploads
from services.registry.store import RegistryStore

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MAX_ARTIFACT_BYTES = 16 << 30


def _check_name(field: str, value: str) -> None:
    if not NAME.match(value):
        raise errors.InvalidArgument(
            f"{field} {value!r} is not a valid name: use 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path):
        self.store = store
        self.objects = objects
        self.staging_dir = staging_dir

    # -- models ---------------------------------------------------------------------------

    def CreateModel(self, request, context):
        _check_name("name", request.name)
        return self.store.create_model(request.name, request.description)

    def GetModel(self, request, context):
        return self.store.get_model(request.name)

    def ListModels(self, request, context):
        return self.store.list_models(request.page_size, request.page_token)

    def UploadModelVersion(self, request_iterator, context):
        staged = uploads.receive(request_iterator, self.staging_dir, MAX_ARTIFACT_BYTES,
                                 self._check_model_header)
        try:
            version = self._inspect_model(staged)
            self.objects.put_file(content_key(staged.sha256), staged.path)
            return self.store.add_version(version)
        finally:
            staged.discard()

    def GetModelVersion(self, request, context):
        return self.store.get_version(request.version_id)

    def ListModelVersions(self, request, context):
        return self.store.list_versions(request)

    def DownloadModelVersion(self, request, context):
        version = self.store.get_version(request.version_id)
        return self._download(version.sha256, version.size_bytes)

    # -- datasets -------------------------------------------------------------------------

    def UploadDataset(self, request_iterator, context):
        staged = uploads.receive(request_iterator, self.staging_dir, MAX_ARTIFACT_BYTES,
                                 lambda header: _check_name("header.name", header.name))
        try:
            header = staged.header
            try:
                info = artifacts.inspect_dataset(staged.path)
            except artifacts.ArtifactError as exc:
                raise errors.InvalidArgument(f"not a usable dataset: {exc}") from None
            dataset = registry_pb2.Dataset(
                name=header.name, sha256=staged.sha256, size_bytes=staged.size,
                num_examples=info.num_examples, x_shape=info.x.shape, y_shape=info.y.shape,
                x_dtype=info.x.dtype, y_dtype=info.y.dtype, metadata=header.metadata)
            self.objects.put_file(content_key(staged.sha256), staged.path)
            return self.store.add_dataset(dataset)
        finally:
            staged.discard()

    def GetDataset(self, request, context):
        return self.store.get_dataset(request.dataset_id)

    def ListDatasets(self, request, context):
        return self.store.list_datasets(request.page_size, request.page_token)

    def DownloadDataset(self, request, context):
        dataset = self.store.get_dataset(request.dataset_id)
        return self._download(dataset.sha256, dataset.size_bytes)

    # -- reports --------------------------------------------------------------------------

    def PutReport(self, request, context):
        if not request.report.model_version_id:
            raise errors.InvalidArgument("report.model_version_id is required")
        report = audit_pb2.AuditReport()
        report.CopyFrom(request.report)
        return self.store.add_report(report)

    def GetReport(self, request, context):
        return self.store.get_report(request.report_id)

    def ListReports(self, request, context):
        return self.store.list_reports(request)

    # -- helpers --------------------------------------------------------------------------

    def _check_model_header(self, header: registry_pb2.ModelUploadHeader) -> None:
        """Refuse what the header alone shows to be wrong, before the body is stored."""
        _check_name("header.model_name", header.model_name)
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
        version = registry_pb2.ModelVersion(
            model_name=header.model_name, format=header.format, task_outputs=header.task_outputs,
            sha256=staged.sha256, size_bytes=staged.size, lineage=header.lineage,
            metadata=header.metadata)
        try:
            if header.format == models_pb2.ARTIFACT_FORMAT_SAFETENSORS:
                self._inspect_weights(header, staged.path, version)
            else:
                info = artifacts.inspect_pt2(staged.path)
                if len(info.input_shapes) != 1 or len(info.output_shapes) != 1:
                    raise errors.InvalidArgument(
                        "the exported program must take one input tensor and return one tensor "
                        f"(it takes {len(info.input_shapes)} and returns {len(info.output_shapes)})")
                version.input_shape[:] = info.input_shapes[0]
                version.output_shape[:] = info.output_shapes[0]
        except artifacts.ArtifactError as exc:
            raise errors.InvalidArgument(f"not a valid artifact: {exc}") from None
        if version.task_outputs and version.output_shape and version.output_shape[-1] > 0 \
                and version.task_outputs > version.output_shape[-1]:
            raise errors.InvalidArgument(
                f"header.task_outputs ({version.task_outputs}) exceeds the model's "
                f"{version.output_shape[-1]} outputs")
        return version

    def _inspect_weights(self, header, path: pathlib.Path, version: registry_pb2.ModelVersion) -> None:
        tensors = artifacts.inspect_safetensors(path)
        expected = architectures.expected_parameters(header.architecture)
        found = {name: tuple(info.shape) for name, info in tensors.items()}
        if found != {k: tuple(v) for k, v in expected.items()}:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            wrong = sorted(n for n in set(found) & set(expected) if found[n] != tuple(expected[n]))
            raise errors.InvalidArgument(
                "the weights do not fit header.architecture: "
                + "; ".join(p for p in (
                    f"missing {missing}" if missing else "",
                    f"unexpected {extra}" if extra else "",
                    "wrong shape " + ", ".join(f"{n} {found[n]} (expected {tuple(expected[n])})"
                                               for n in wrong) if wrong else "") if p))
        version.architecture.CopyFrom(header.architecture)
        io = architectures.io_shapes(header.architecture)
        version.input_shape[:] = io[0]
        version.output_shape[:] = io[1]

    def _check_lineage(self, lineage: registry_pb2.Lineage) -> None:
        if lineage.parent_version_id:
            self.store.get_version(lineage.parent_version_id)
        if lineage.dataset_version_id:
            self.store.get_dataset(lineage.dataset_version_id)

    def _download(self, sha256: str, size: int):
        key = content_key(sha256)
        if not self.objects.exists(key):
            raise errors.DataLoss(f"the object {sha256} is missing from the object store")
        first = True
        for chunk in self.objects.read_chunks(key, CHUNK):
            if first:
                yield registry_pb2.DownloadChunk(sha256=sha256, size_bytes=size, chunk=chunk)
                first = False
            else:
                yield registry_pb2.DownloadChunk(chunk=chunk)
        if first:  # an empty object still announces itself
            yield registry_pb2.DownloadChunk(sha256=sha256, size_bytes=size)


def binding(store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path):
    from lambdascope.server import ServiceBinding

    servicer = RegistryServicer(store, objects, staging_dir)
    return ServiceBinding(
        registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
        lambda server: registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server))
