"""Idempotent uploads: each version and dataset keeps the request id it was uploaded with.

Revision ID: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    for table in ("model_versions", "datasets"):
        op.add_column(table, sa.Column("request_key", sa.String(260), nullable=True))
        op.add_column(table, sa.Column("request_digest", sa.String(64), nullable=True))
        op.create_index(f"ix_{table}_request_key", table, ["request_key"], unique=True)


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
