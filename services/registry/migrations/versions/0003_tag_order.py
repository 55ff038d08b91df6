"""Version tags carry their version's creation time, indexed after key and value.

A search by tag then walks the index (key, value, created_at, version_id) in page order and
stops after one page, instead of collecting every version with that tag and sorting them.
Existing tag rows are backfilled from their versions. On PostgreSQL, statistics on (key, value)
let the planner see that a value goes with its key.

Revision ID: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("version_tags") as t:
        t.add_column(sa.Column("created_at", sa.Float, nullable=False, server_default="0"))
    op.execute("UPDATE version_tags SET created_at = (SELECT model_versions.created_at FROM "
               "model_versions WHERE model_versions.id = version_tags.version_id)")
    # No default from here on: a registry still running the previous code (a rolling update)
    # fails its tag insert, and with it the upload, instead of writing rows a search misorders.
    with op.batch_alter_table("version_tags") as t:
        t.alter_column("created_at", server_default=None)
    op.drop_index("ix_version_tags_key_value", table_name="version_tags")
    op.create_index("ix_version_tags_key_value_created", "version_tags",
                    ["key", "value", "created_at", "version_id"])
    if op.get_bind().dialect.name == "postgresql":
        # A tag's value depends on its key ('even' only ever goes with 'parity'): without
        # statistics on the pair, PostgreSQL multiplies the two frequencies, underestimates a
        # two-tag search threefold and sorts every match instead of walking one tag's index.
        op.execute("CREATE STATISTICS IF NOT EXISTS version_tags_key_value_stats "
                   "(mcv, dependencies) ON key, value FROM version_tags")


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
