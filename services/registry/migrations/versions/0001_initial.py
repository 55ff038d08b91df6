"""The schema as first shipped (models, versions, datasets, reports with protobuf blobs).

Revision ID: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(200), sa.ForeignKey("models.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("proto", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("model_name", "version"),
    )
    op.create_index("ix_model_versions_job_id", "model_versions", ["job_id"])
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("proto", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_datasets_name", "datasets", ["name"])
    op.create_table(
        "reports",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model_version_id", sa.String(64), sa.ForeignKey("model_versions.id"),
                  nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("proto", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_reports_model_version_id", "reports", ["model_version_id"])


def downgrade() -> None:
    for table in ("reports", "datasets", "model_versions", "models"):
        op.drop_table(table)
