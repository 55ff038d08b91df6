"""Names unique per team; reports owned by a team.

Model and dataset names become "<team>/<name>" in their columns (the messages keep the plain
name), so two teams can both have a model `mlp`. Each model row is copied under its new key
before the rows that refer to it move, and the old row removed last: the foreign keys hold at
every step on SQLite and PostgreSQL alike. A report belongs to the team of the version it audits.

Revision ID: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

_UNQUALIFIED = "NOT LIKE '%/%'"


def upgrade() -> None:
    op.execute(f"INSERT INTO models (name, description, created_at, owner) SELECT "
               f"owner || '/' || name, description, created_at, owner FROM models "
               f"WHERE name {_UNQUALIFIED}")
    owner_of = "(SELECT models.owner FROM models WHERE models.name = {table}.model_name)"
    for table in ("model_versions", "aliases", "alias_events"):
        op.execute(f"UPDATE {table} SET model_name = {owner_of.format(table=table)} || '/' || "
                   f"model_name WHERE model_name {_UNQUALIFIED} AND "
                   f"{owner_of.format(table=table)} IS NOT NULL")
    op.execute(f"DELETE FROM models WHERE name {_UNQUALIFIED}")
    op.execute(f"UPDATE datasets SET name = owner || '/' || name WHERE name {_UNQUALIFIED}")
    with op.batch_alter_table("reports") as t:
        t.add_column(sa.Column("owner", sa.String(100), nullable=False, server_default=""))
    op.execute("UPDATE reports SET owner = (SELECT model_versions.owner FROM model_versions "
               "WHERE model_versions.id = reports.model_version_id)")
    with op.batch_alter_table("reports") as t:
        t.alter_column("owner", server_default=None)
    op.create_index("ix_reports_owner", "reports", ["owner"])


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
