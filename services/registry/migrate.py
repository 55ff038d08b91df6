"""Bring a registry database to the current schema with Alembic (run at every start).

A database created before migrations existed (the four original tables, no alembic_version)
is stamped as revision 0001 first, then upgraded like any other.
"""
from __future__ import annotations

import pathlib

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = pathlib.Path(__file__).with_name("migrations")
FIRST = "0001"


def migrate(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        tables = set(sa.inspect(conn).get_table_names())
        if "alembic_version" not in tables and "models" in tables:
            command.stamp(config, FIRST)
        command.upgrade(config, "head")
