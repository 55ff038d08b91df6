"""Read-only grants: a team shares a model (with its versions) or a dataset with another team.

Revision ID: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("grantee", sa.String(100), sa.ForeignKey("teams.name"), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(16), nullable=False),
    )
    op.create_index("ix_grants_owner", "grants", ["owner"])
    op.create_index("ix_grants_grantee", "grants", ["grantee", "kind", "name"])


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
