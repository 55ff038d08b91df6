"""Who a key is for: api_keys.user_name, and the user of each audit event.

Revision ID: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    for table in ("api_keys", "audit_events"):
        with op.batch_alter_table(table) as t:
            t.add_column(sa.Column("user_name", sa.String(100), nullable=False, server_default=""))


def downgrade() -> None:
    raise NotImplementedError("the registry schema is not downgraded; restore a backup instead")
