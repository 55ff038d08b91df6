"""The audit trail: every call of an RPC that changes state (the `(writes)` method option in
protos/lambdascope/v1/access.proto) and every denied call, with who made it, for which team, on
what, and the answer.

Each service keeps its part in its own database (the registry in its migrated schema, the job
services beside their jobs table) and serves it through Platform.ListAuditEvents;
`lambdascope admin log` merges the three. The server bootstrap records calls (lambdascope.server);
no servicer does. An event is written before the answer leaves, so a call the caller saw
answered is in the trail. Keys appear only by their public id.
"""
from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa
from google.protobuf.message import Message

from lambdascope import paging, specs
from lambdascope.v1 import platform_pb2

log = logging.getLogger("lambdascope.audit_log")

# Fields of a request that name what it acts on; with `header` for uploads.
_NAMING = ("version_id", "model_version_id", "model_version_ids", "model_name", "name",
           "dataset_id", "dataset_name", "report_id", "job_id", "training_job_id", "key_id",
           "team", "alias")
PRUNE_EVERY_SECONDS = 3600.0


def define(metadata: sa.MetaData) -> sa.Table:
    """The table of events, in `metadata` (the registry's schema, or a job service's own)."""
    return sa.Table(
        "audit_events", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("rpc", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("team", sa.String(100), nullable=False, index=True),
        sa.Column("object", sa.Text, nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("result_id", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(100), nullable=False, server_default=""),
    )


_own_metadata = sa.MetaData()
_own_table = define(_own_metadata)


class AuditLog:
    """Writes and reads one service's events. `table`: the registry passes its migrated table;
    the job services leave it out and get one created beside their jobs."""

    def __init__(self, engine: sa.Engine, service: str, *, retention_days: float,
                 table: sa.Table | None = None):
        if table is None:
            _own_metadata.create_all(engine)
            _add_user_column(engine)
            table = _own_table
        self.engine, self.service, self.table = engine, service, table
        self.retention_seconds = retention_days * 86400.0
        self._pruned_at = 0.0
        self._lock = threading.Lock()

    def record(self, *, rpc: str, key_id: str, team: str, object: str, code: str,
               reason: str = "", result_id: str = "", user: str = "") -> None:
        """Add one event; drops those older than the retention now and then."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(self.table.insert().values(
                at=now, service=self.service, rpc=rpc[:200], key_id=key_id[:16], team=team[:100],
                object=object[:2000], code=code, reason=reason[:32], result_id=result_id[:64],
                user_name=user[:100]))
        with self._lock:
            due = now - self._pruned_at >= PRUNE_EVERY_SECONDS
            if due:
                self._pruned_at = now
        if due and self.retention_seconds > 0:
            with self.engine.begin() as conn:
                conn.execute(self.table.delete().where(self.table.c.at < now - self.retention_seconds))

    def list(self, request: platform_pb2.ListAuditEventsRequest) -> platform_pb2.ListAuditEventsResponse:
        """A page of events, newest first."""
        t = self.table
        size, query_id, after = paging.keyset(request, 1)
        query = sa.select(t).order_by(t.c.id.desc()).limit(size + 1)
        if request.team:
            query = query.where(t.c.team == request.team)
        if request.denied_only:
            query = query.where(t.c.code != "OK", t.c.reason != "")
        if request.HasField("since"):
            query = query.where(t.c.at >= request.since.ToNanoseconds() / 1e9)
        if after is not None:
            query = query.where(t.c.id < after[0])
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        token = paging.encode_keyset(query_id, [rows[size - 1].id]) if len(rows) > size else ""
        return platform_pb2.ListAuditEventsResponse(
            events=[_event(r) for r in rows[:size]], next_page_token=token)


def _add_user_column(engine: sa.Engine) -> None:
    """A job service's table made before events named their user gets the column."""
    if "user_name" not in {c["name"] for c in sa.inspect(engine).get_columns("audit_events")}:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_events ADD COLUMN user_name VARCHAR(100) "
                                 "NOT NULL DEFAULT ''"))


def describe(request: object) -> str:
    """What a request names ("version_id=mv-..., model_name=mlp"): its id and name fields, and
    those of an upload's header. Never tags, specs or bytes."""
    if not isinstance(request, Message):
        return ""
    parts = []
    for message in (request, _header(request)):
        if message is None:
            continue
        for field in message.DESCRIPTOR.fields:
            if field.name not in _NAMING:
                continue
            value = getattr(message, field.name)
            if field.is_repeated:
                value = ",".join(str(v) for v in list(value)[:20])
            if value:
                parts.append(f"{field.name}={value}")
    return ", ".join(parts)


def _header(request: Message) -> Message | None:
    names = {f.name for f in request.DESCRIPTOR.fields}
    if "header" in names and request.HasField("header"):
        return request.header
    return None


def result_id(response: object) -> str:
    """The id a write created or touched, from its answer: a version's, dataset's, job's, or a
    created key's public id (never its secret)."""
    for message in (response, getattr(response, "key", None)):
        if isinstance(message, Message) and "id" in message.DESCRIPTOR.fields_by_name:
            value = getattr(message, "id")
            if isinstance(value, str) and value:
                return value
    return ""


def _event(row: sa.Row) -> platform_pb2.AuditEvent:
    return platform_pb2.AuditEvent(id=row.id, at=specs.timestamp(row.at), service=row.service, rpc=row.rpc,
                                   key_id=row.key_id, team=row.team, object=row.object,
                                   code=row.code, reason=row.reason, result_id=row.result_id,
                                   user=row.user_name)
