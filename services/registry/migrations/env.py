"""Alembic environment: migrations run in-process on the registry's own engine (see migrate.py)."""
from __future__ import annotations

from alembic import context

from services.registry.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
