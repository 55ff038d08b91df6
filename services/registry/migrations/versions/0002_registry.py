"""Owners, lineage columns, dataset versions, tags, aliases with history, the objects table.

Existing rows are backfilled: lineage columns from each version's stored message, dataset
version numbers by upload order per name, one objects row per stored sha256.

Revision ID: 0002
"""
from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from lambdascope.v1 import registry_pb2

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("models") as t:
        t.add_column(sa.Column("owner", sa.String(100), nullable=False, server_default="default"))
    with op.batch_alter_table("model_versions") as t:
        t.add_column(sa.Column("parent_version_id", sa.String(64), nullable=False,
                               server_default=""))
        t.add_column(sa.Column("dataset_version_id", sa.String(64), nullable=False,
                               server_default=""))
        t.add_column(sa.Column("owner", sa.String(100), nullable=False, server_default="default"))
    with op.batch_alter_table("datasets") as t:
        t.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        t.add_column(sa.Column("owner", sa.String(100), nullable=False, server_default="default"))
    op.create_table(
        "objects",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pins", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    _backfill()
    with op.batch_alter_table("datasets") as t:
        t.create_unique_constraint("uq_datasets_name_version", ["name", "version"])
    op.create_index("ix_model_versions_sha256", "model_versions", ["sha256"])
    op.create_index("ix_model_versions_parent_version_id", "model_versions", ["parent_version_id"])
    op.create_index("ix_model_versions_dataset_version_id", "model_versions",
                    ["dataset_version_id"])
    op.create_index("ix_model_versions_model_created", "model_versions",
                    ["model_name", "created_at", "id"])
    op.create_index("ix_model_versions_created", "model_versions", ["created_at", "id"])
    op.create_index("ix_datasets_sha256", "datasets", ["sha256"])
    op.create_index("ix_datasets_created", "datasets", ["created_at", "id"])
    op.create_table(
        "version_tags",
        sa.Column("version_id", sa.String(64),
                  sa.ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(1024), nullable=False),
    )
    op.create_index("ix_version_tags_key_value", "version_tags", ["key", "value"])
    op.create_table(
        "dataset_tags",
        sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(1024), nullable=False),
    )
    op.create_index("ix_dataset_tags_key_value", "dataset_tags", ["key", "value"])
    op.create_table(
        "aliases",
        sa.Column("model_name", sa.String(200), sa.ForeignKey("models.name"), primary_key=True),
        sa.Column("alias", sa.String(100), primary_key=True),
        sa.Column("version_id", sa.String(64), sa.ForeignKey("model_versions.id"),
                  nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
    )
    op.create_index("ix_aliases_version_id", "aliases", ["version_id"])
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("from_version_id", sa.String(64), nullable=False),
        sa.Column("to_version_id", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
    )
    op.create_index("ix_alias_events_alias", "alias_events", ["model_name", "alias", "id"])


def _backfill() -> None:
    conn = op.get_bind()
    versions = sa.table("model_versions", sa.column("id"), sa.column("proto"),
                        sa.column("parent_version_id"), sa.column("dataset_version_id"))
    datasets = sa.table("datasets", sa.column("id"), sa.column("name"), sa.column("created_at"),
                        sa.column("sha256"), sa.column("proto"), sa.column("version"))
    objects = sa.table("objects", sa.column("sha256"), sa.column("size_bytes"),
                       sa.column("state"), sa.column("pins"), sa.column("updated_at"))
    sizes: dict[str, int] = {}
    for row in conn.execute(sa.select(versions.c.id, versions.c.proto)).all():
        version = registry_pb2.ModelVersion.FromString(row.proto)
        sizes[version.sha256] = version.size_bytes
        conn.execute(versions.update().where(versions.c.id == row.id).values(
            parent_version_id=version.lineage.parent_version_id,
            dataset_version_id=version.lineage.dataset_version_id))
    counters: dict[str, int] = {}
    for row in conn.execute(sa.select(datasets.c.id, datasets.c.name, datasets.c.proto)
                            .order_by(datasets.c.created_at, datasets.c.id)).all():
        counters[row.name] = counters.get(row.name, 0) + 1
        dataset = registry_pb2.Dataset.FromString(row.proto)
        dataset.version = counters[row.name]
        sizes[dataset.sha256] = dataset.size_bytes
        conn.execute(datasets.update().where(datasets.c.id == row.id).values(
            version=dataset.version, proto=dataset.SerializeToString()))
    now = time.time()
    for sha, size in sizes.items():
        conn.execute(objects.insert().values(sha256=sha, size_bytes=size, state="present",
                                             pins=0, updated_at=now))


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
