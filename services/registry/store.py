"""The registry's metadata in SQL: models, versions, datasets, reports.

Each record keeps its full protobuf message (the API's own shape) beside the columns that
queries filter on, so the API and the schema cannot drift apart.
"""
from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from google.protobuf import timestamp_pb2

from lambdascope import errors, paging
from lambdascope.v1 import audit_pb2, registry_pb2

metadata = sa.MetaData()

models = sa.Table(
    "models", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)
versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model_name", sa.String(200), sa.ForeignKey("models.name"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False, default="", index=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("proto", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("model_name", "version"),
)
datasets = sa.Table(
    "datasets", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("proto", sa.LargeBinary, nullable=False),
)
reports = sa.Table(
    "reports", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model_version_id", sa.String(64), sa.ForeignKey("model_versions.id"),
              nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("proto", sa.LargeBinary, nullable=False),
)


def _now() -> tuple[float, timestamp_pb2.Timestamp]:
    now = time.time()
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(now * 1e9))
    return now, ts


class RegistryStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        metadata.create_all(engine)

    # -- models ---------------------------------------------------------------------------

    def create_model(self, name: str, description: str = "") -> registry_pb2.Model:
        try:
            with self.engine.begin() as conn:
                conn.execute(models.insert().values(name=name, description=description,
                                                    created_at=time.time()))
        except sa.exc.IntegrityError:
            raise errors.AlreadyExists(f"model {name!r} already exists") from None
        return self.get_model(name)

    def get_model(self, name: str) -> registry_pb2.Model:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(models).where(models.c.name == name)).first()
            if row is None:
                raise errors.NotFound(f"no model named {name!r}")
            latest = conn.execute(sa.select(sa.func.max(versions.c.version))
                                  .where(versions.c.model_name == name)).scalar()
        model = registry_pb2.Model(name=row.name, description=row.description,
                                   latest_version=latest or 0)
        model.created_at.FromNanoseconds(int(row.created_at * 1e9))
        return model

    def list_models(self, size: int, token: str) -> registry_pb2.ListModelsResponse:
        names, next_token = self._page(sa.select(models.c.name).order_by(models.c.name),
                                       size, token)
        return registry_pb2.ListModelsResponse(models=[self.get_model(n) for n in names],
                                               next_page_token=next_token)

    # -- versions -------------------------------------------------------------------------

    def add_version(self, version: registry_pb2.ModelVersion) -> registry_pb2.ModelVersion:
        """Record a verified artifact as the model's next version (the model is created if new)."""
        version.id = f"mv-{uuid.uuid4().hex[:16]}"
        version.state = registry_pb2.VERSION_STATE_READY
        now, ts = _now()
        version.created_at.CopyFrom(ts)
        for _attempt in range(20):
            try:
                with self.engine.begin() as conn:
                    if conn.execute(sa.select(models.c.name)
                                    .where(models.c.name == version.model_name)).first() is None:
                        conn.execute(models.insert().values(name=version.model_name,
                                                            description="", created_at=now))
                    latest = conn.execute(sa.select(sa.func.max(versions.c.version)).where(
                        versions.c.model_name == version.model_name)).scalar()
                    version.version = (latest or 0) + 1
                    conn.execute(versions.insert().values(
                        id=version.id, model_name=version.model_name, version=version.version,
                        job_id=version.lineage.job_id, sha256=version.sha256, created_at=now,
                        proto=version.SerializeToString()))
                return version
            except sa.exc.IntegrityError:
                time.sleep(0.01)  # a concurrent upload took this number (or created the model)
        raise errors.Unavailable("too many concurrent uploads to this model; retry")

    def get_version(self, version_id: str) -> registry_pb2.ModelVersion:
        with self.engine.connect() as conn:
            blob = conn.execute(sa.select(versions.c.proto)
                                .where(versions.c.id == version_id)).scalar()
        if blob is None:
            raise errors.NotFound(f"no model version with id {version_id!r}")
        return registry_pb2.ModelVersion.FromString(blob)

    def list_versions(self, request: registry_pb2.ListModelVersionsRequest
                      ) -> registry_pb2.ListModelVersionsResponse:
        query = sa.select(versions.c.proto).order_by(versions.c.model_name, versions.c.version)
        if request.model_name:
            self.get_model(request.model_name)  # NOT_FOUND for an unknown model
            query = query.where(versions.c.model_name == request.model_name)
        if request.job_id:
            query = query.where(versions.c.job_id == request.job_id)
        blobs, next_token = self._page(query, request.page_size, request.page_token)
        return registry_pb2.ListModelVersionsResponse(
            versions=[registry_pb2.ModelVersion.FromString(b) for b in blobs],
            next_page_token=next_token)

    # -- datasets -------------------------------------------------------------------------

    def add_dataset(self, dataset: registry_pb2.Dataset) -> registry_pb2.Dataset:
        dataset.id = f"ds-{uuid.uuid4().hex[:16]}"
        now, ts = _now()
        dataset.created_at.CopyFrom(ts)
        with self.engine.begin() as conn:
            conn.execute(datasets.insert().values(id=dataset.id, name=dataset.name,
                                                  sha256=dataset.sha256, created_at=now,
                                                  proto=dataset.SerializeToString()))
        return dataset

    def get_dataset(self, dataset_id: str) -> registry_pb2.Dataset:
        with self.engine.connect() as conn:
            blob = conn.execute(sa.select(datasets.c.proto)
                                .where(datasets.c.id == dataset_id)).scalar()
        if blob is None:
            raise errors.NotFound(f"no dataset with id {dataset_id!r}")
        return registry_pb2.Dataset.FromString(blob)

    def list_datasets(self, size: int, token: str) -> registry_pb2.ListDatasetsResponse:
        blobs, next_token = self._page(
            sa.select(datasets.c.proto).order_by(datasets.c.created_at, datasets.c.id), size, token)
        return registry_pb2.ListDatasetsResponse(
            datasets=[registry_pb2.Dataset.FromString(b) for b in blobs],
            next_page_token=next_token)

    # -- reports --------------------------------------------------------------------------

    def add_report(self, report: audit_pb2.AuditReport) -> audit_pb2.AuditReport:
        self.get_version(report.model_version_id)
        if report.dataset_id:
            self.get_dataset(report.dataset_id)
        report.id = f"rep-{uuid.uuid4().hex[:16]}"
        now, ts = _now()
        report.created_at.CopyFrom(ts)
        with self.engine.begin() as conn:
            conn.execute(reports.insert().values(id=report.id,
                                                 model_version_id=report.model_version_id,
                                                 created_at=now, proto=report.SerializeToString()))
        return report

    def get_report(self, report_id: str) -> audit_pb2.AuditReport:
        with self.engine.connect() as conn:
            blob = conn.execute(sa.select(reports.c.proto)
                                .where(reports.c.id == report_id)).scalar()
        if blob is None:
            raise errors.NotFound(f"no audit report with id {report_id!r}")
        return audit_pb2.AuditReport.FromString(blob)

    def list_reports(self, request: registry_pb2.ListReportsRequest
                     ) -> registry_pb2.ListReportsResponse:
        query = sa.select(reports.c.proto).order_by(reports.c.created_at, reports.c.id)
        if request.model_version_id:
            self.get_version(request.model_version_id)
            query = query.where(reports.c.model_version_id == request.model_version_id)
        blobs, next_token = self._page(query, request.page_size, request.page_token)
        return registry_pb2.ListReportsResponse(
            reports=[audit_pb2.AuditReport.FromString(b) for b in blobs],
            next_page_token=next_token)

    def _page(self, query: sa.Select, size: int, token: str) -> tuple[list, str]:
        """One page of the query's first column, and the token of the next page ("" at the end)."""
        size, offset = paging.size(size), paging.decode_token(token)
        with self.engine.connect() as conn:
            rows = conn.execute(query.offset(offset).limit(size + 1)).scalars().all()
        return list(rows[:size]), paging.encode_token(offset + size) if len(rows) > size else ""
