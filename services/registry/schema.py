"""The registry's SQL schema (SQLAlchemy Core). Migrations in `migrations/` build exactly this;
a test compares the two, so the schema the code queries and the one deployed cannot drift.

Names are per team: the `name` of a model (and the model_name that refers to it) and of a
dataset is stored as "<team>/<name>" (services/registry/reads.model_key), while the protobuf
messages keep the name the team sees. Every record has an owner team.

Records keep their full protobuf message (the API's own shape) beside the columns queries filter
on. Mutable parts live in their own tables: tags, aliases (with their history), and the
reference-counted objects table that decides when stored bytes may be deleted.
"""
from __future__ import annotations

import sqlalchemy as sa

from lambdascope import audit_log

metadata = sa.MetaData()

models = sa.Table(
    "models", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("owner", sa.String(100), nullable=False, server_default="default"),
)

versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model_name", sa.String(200), sa.ForeignKey("models.name"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("proto", sa.LargeBinary, nullable=False),
    sa.Column("parent_version_id", sa.String(64), nullable=False, server_default="", index=True),
    sa.Column("dataset_version_id", sa.String(64), nullable=False, server_default="",
              index=True),
    sa.Column("owner", sa.String(100), nullable=False, server_default="default"),
    # the upload's "<team>\x1f<request_id>" and its header's digest (a retry answers with this
    # record); NULL for records written before 0010 or uploaded without a request id
    sa.Column("request_key", sa.String(260), nullable=True),
    sa.Column("request_digest", sa.String(64), nullable=True),
    sa.UniqueConstraint("model_name", "version"),
    sa.Index("ix_model_versions_model_created", "model_name", "created_at", "id"),
    sa.Index("ix_model_versions_created", "created_at", "id"),
    sa.Index("ix_model_versions_request_key", "request_key", unique=True),
)

datasets = sa.Table(
    "datasets", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("proto", sa.LargeBinary, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("owner", sa.String(100), nullable=False, server_default="default"),
    sa.Column("request_key", sa.String(260), nullable=True),  # as model_versions'
    sa.Column("request_digest", sa.String(64), nullable=True),
    sa.UniqueConstraint("name", "version", name="uq_datasets_name_version"),
    sa.Index("ix_datasets_created", "created_at", "id"),
    sa.Index("ix_datasets_request_key", "request_key", unique=True),
)

reports = sa.Table(
    "reports", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model_version_id", sa.String(64), sa.ForeignKey("model_versions.id"),
              nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("proto", sa.LargeBinary, nullable=False),
    # The team whose audit this is (not necessarily the model's: a model can be shared).
    sa.Column("owner", sa.String(100), nullable=False, index=True),
)

# A report's HTML page (PutReportRequest.html), apart so that listing reports never reads it.
report_pages = sa.Table(
    "report_pages", metadata,
    sa.Column("report_id", sa.String(64), sa.ForeignKey("reports.id"), primary_key=True),
    sa.Column("html", sa.LargeBinary, nullable=False),
)

version_tags = sa.Table(
    "version_tags", metadata,
    sa.Column("version_id", sa.String(64), sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(1024), nullable=False),
    # The version's creation time, copied: a search by tag walks this index in page order.
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_version_tags_key_value_created", "key", "value", "created_at", "version_id"),
)

dataset_tags = sa.Table(
    "dataset_tags", metadata,
    sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(1024), nullable=False),
    sa.Index("ix_dataset_tags_key_value", "key", "value"),
)

aliases = sa.Table(
    "aliases", metadata,
    sa.Column("model_name", sa.String(200), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("model_versions.id"), nullable=False,
              index=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=False),
)

alias_events = sa.Table(
    "alias_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("from_version_id", sa.String(64), nullable=False),
    sa.Column("to_version_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("by", sa.String(100), nullable=False),
    sa.Index("ix_alias_events_alias", "model_name", "alias", "id"),
)

# Stored content, one row per sha256. `pins` counts uploads between "bytes going to the store"
# and "record committed"; state "deleting" is set (under the row's lock) before the bytes are
# removed, so an upload never commits a record whose bytes a collector is removing.
objects = sa.Table(
    "objects", metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("pins", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Identities (lambdascope.auth): teams, and API keys stored as a salted scrypt hash of their
# secret part (never the key itself). A key is revoked by stamping revoked_at, never deleted, so
# the audit trail keeps naming it.
teams = sa.Table(
    "teams", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("team", sa.String(100), sa.ForeignKey("teams.name"), nullable=False, index=True),
    sa.Column("role", sa.Integer, nullable=False),
    sa.Column("salt", sa.LargeBinary, nullable=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(16), nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("user_name", sa.String(100), nullable=False, server_default=""),
)

# Read-only grants (Registry.Share): team `grantee` may read the model or dataset stored under
# `name` ("<owner>/<name>": a model with all its versions, or every version of a dataset name).
grants = sa.Table(
    "grants", metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("grantee", sa.String(100), sa.ForeignKey("teams.name"), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(16), nullable=False),
    sa.Index("ix_grants_grantee", "grantee", "kind", "name"),
)

# The registry's part of the audit trail (lambdascope.audit_log defines its columns).
audit_events = audit_log.define(metadata)
