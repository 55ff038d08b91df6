"""Audit reports' HTML pages: report_pages, one row per report that has one.

Revision ID: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "report_pages",
        sa.Column("report_id", sa.String(64), sa.ForeignKey("reports.id"), primary_key=True),
        sa.Column("html", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
