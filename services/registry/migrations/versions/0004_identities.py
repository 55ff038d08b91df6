"""Teams and API keys (issue: teams): who a caller is comes from its key, stored hashed.

Records already stamped with an owner keep it; every owner found becomes a team, so their
objects stay reachable by keys created for that team.

Revision ID: 0004
"""
from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("team", sa.String(100), sa.ForeignKey("teams.name"), nullable=False),
        sa.Column("role", sa.Integer, nullable=False),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.Column("job_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_api_keys_team", "api_keys", ["team"])
    now = time.time()
    conn = op.get_bind()
    owners = set()
    for table in ("models", "model_versions", "datasets"):
        owners.update(conn.execute(sa.text(f"SELECT DISTINCT owner FROM {table}")).scalars())
    for owner in sorted(owners):
        conn.execute(sa.text("INSERT INTO teams (name, created_at) VALUES (:n, :t)"),
                     {"n": owner, "t": now})


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
