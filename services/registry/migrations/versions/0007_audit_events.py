"""The audit trail: every write and every denied call (lambdascope.audit_log).

Revision ID: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("rpc", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("team", sa.String(100), nullable=False),
        sa.Column("object", sa.Text, nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("result_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_team", "audit_events", ["team"])


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
