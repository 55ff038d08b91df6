"""SQL engines: SQLite embedded (WAL, foreign keys, busy timeout) or any SQLAlchemy URL."""
from __future__ import annotations

import pathlib

import sqlalchemy as sa


def engine(url: str) -> sa.Engine:
    """Open `url`; for SQLite create the directory and set the pragmas a server needs."""
    if url.startswith("sqlite:///"):
        path = pathlib.Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        eng = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return eng
    return sa.create_engine(url, pool_pre_ping=True)
