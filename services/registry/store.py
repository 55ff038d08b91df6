"""The registry's metadata in SQL: models, versions, datasets, tags, aliases, reports, objects.

Versions and datasets appear only once their bytes are stored and verified: a record is
inserted in one transaction with its tags, so a failed or abandoned upload leaves no record.
Stored bytes are reference-counted through the `objects` table (see schema.py): `pin_object`
before the bytes go to the store, the commit unpins, and a collector may only remove bytes it
marked "deleting" while nothing referenced or pinned them.

Every method takes the caller's team. A team reads its own records and those another team
shared with it (`grants`, named "<owner>/<name>"); it writes only its own. Another team's record
that was not shared answers exactly as a missing one does; one that was, when written to,
answers PERMISSION_DENIED.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from google.protobuf.message import Message

from lambdascope import errors, paging, specs
from lambdascope.storage import db
from lambdascope.v1 import audit_pb2, registry_pb2
from services.registry import reads
from services.registry.reads import model_key as key
from services.registry.reads import owner_of, plain_name, qualify, shown
from services.registry.migrate import migrate
from services.registry.schema import (
    alias_events,
    aliases,
    api_keys,
    dataset_tags,
    datasets,
    grants,
    models,
    objects,
    report_pages,
    reports,
    teams,
    version_tags,
    versions,
)

# A pin older than this belongs to an upload that died (the registry was killed mid-upload);
# collectors may ignore it. The registry passes its staging TTL.
STALE_PIN_SECONDS = 86400.0
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class UploadRequest:
    """What makes an upload idempotent: the team's request id and its header's digest."""

    key: str  # "<team>/<request_id>", unique among versions (and among datasets)
    request_id: str
    digest: str  # sha256 of the header without its request id


class Replayed(Exception):
    """An upload whose request id already made `record`: the retry answers with it."""

    def __init__(self, record: Message):
        super().__init__(record)
        self.record = record


class RegistryStore:
    """`url` is opened twice. On SQLite, writes take the write lock when they begin (BEGIN
    IMMEDIATE, see lambdascope.storage.db) while reads stay lock-free under WAL. On PostgreSQL,
    writes use row locks (SELECT ... FOR UPDATE) and check each pooled connection before use;
    reads run in autocommit (no BEGIN/ROLLBACK round trips; under READ COMMITTED every
    statement sees its own snapshot either way) on connections that are not pinged first: a
    read that meets a connection the server dropped is retried once on a fresh one (`read`).
    A read RPC checks out one connection for all its statements."""

    def __init__(self, url: str):
        self.engine = db.engine(url, immediate=True)
        self.reader = (db.engine(url) if self.engine.dialect.name == "sqlite"
                       else db.engine(url, pre_ping=False).execution_options(
                           isolation_level="AUTOCOMMIT"))
        migrate(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
        self.reader.dispose()

    def read(self, read: Callable[[sa.Connection], T]) -> T:
        """Run `read` on a pooled reading connection; once more on a fresh connection when the
        first was found dead (the database restarted, or dropped an idle session)."""
        try:
            with self.reader.connect() as conn:
                return read(conn)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self.reader.connect() as conn:
            return read(conn)

    # -- models ---------------------------------------------------------------------------

    def create_model(self, name: str, description: str, owner: str) -> registry_pb2.Model:
        try:
            with self.engine.begin() as conn:
                conn.execute(models.insert().values(name=key(owner, name), description=description,
                                                    created_at=time.time(), owner=owner))
        except sa.exc.IntegrityError:
            raise errors.AlreadyExists(f"model {name!r} already exists") from None
        return self.get_model(name, owner)

    def get_model(self, name: str, team: str) -> registry_pb2.Model:
        """The team's model `name`, or "<owner>/<name>" another team shared with it."""
        return self.read(lambda conn: self._model(conn, self._readable(conn, "model", name, team),
                                                  team))

    def _model(self, conn: sa.Connection, model_key: str, team: str) -> registry_pb2.Model:
        row = conn.execute(sa.select(models).where(models.c.name == model_key)).first()
        if row is None:
            raise errors.NotFound(f"no model named {shown(model_key, team)!r}")
        latest = conn.execute(sa.select(sa.func.max(versions.c.version))
                              .where(versions.c.model_name == model_key)).scalar()
        return registry_pb2.Model(name=shown(row.name, team), description=row.description,
                                  latest_version=latest or 0, owner=row.owner,
                                  created_at=specs.timestamp(row.created_at))

    def list_models(self, request: registry_pb2.ListModelsRequest, team: str
                    ) -> registry_pb2.ListModelsResponse:
        """The team's models and those shared with it (named "<owner>/<name>")."""
        shared = reads.granted_names("model", sa.literal(team))
        query = (sa.select(models.c.name)
                 .where(sa.or_(models.c.owner == team, models.c.name.in_(shared)))
                 .order_by(models.c.name))

        def page(conn: sa.Connection) -> registry_pb2.ListModelsResponse:
            names, token = self._keyset(conn, query, request, [models.c.name], lambda n: [n])
            return registry_pb2.ListModelsResponse(
                models=[self._model(conn, n, team) for n in names], next_page_token=token)

        return self.read(page)

    # -- grants ---------------------------------------------------------------------------

    def _readable(self, conn: sa.Connection, kind: str, name: str, team: str) -> str:
        """The stored key of the model or dataset `name` means to `team`, when the team may
        read it; otherwise NOT_FOUND, worded as for a missing one."""
        stored = qualify(team, name)
        if owner_of(stored) != team and not self._granted(conn, kind, stored, team):
            noun = "model" if kind == "model" else "dataset"
            raise errors.NotFound(f"no {noun} named {shown(stored, team)!r}")
        return stored

    @staticmethod
    def _granted(conn: sa.Connection, kind: str, stored: str, team: str) -> bool:
        return conn.execute(sa.select(grants.c.name).where(
            grants.c.kind == kind, grants.c.name == stored, grants.c.grantee == team)).first() is not None

    @staticmethod
    def _read_only(kind: str, stored: str, team: str) -> errors.PermissionDenied:
        """What writing to a record another team shared with `team` answers."""
        return errors.PermissionDenied(
            f"{kind} {stored!r} belongs to team {owner_of(stored)!r}, which shares it with team "
            f"{team!r} read-only; copy it into your team to change it", reason="read_only")

    def share(self, kind: str, name: str, grantee: str, team: str, by: str) -> registry_pb2.Grant:
        """Let `grantee` read the team's model (all its versions) or dataset name; sharing
        again is a no-op that answers the grant as it stands."""
        stored = key(team, name)
        if grantee == team:
            raise errors.InvalidArgument(f"team {team!r} owns {kind} {name!r} already; "
                                         "share it with another team")
        with self.engine.begin() as conn:
            table = models if kind == "model" else datasets
            if conn.execute(sa.select(table.c.name).where(table.c.name == stored)).first() is None:
                raise errors.NotFound(f"no {kind} named {name!r}")
            if conn.execute(sa.select(teams.c.name).where(teams.c.name == grantee)).first() is None:
                raise errors.NotFound(f"no team named {grantee!r}")
            if not self._granted(conn, kind, stored, grantee):
                _insert_new(conn, grants.insert().values(  # refused: granted concurrently
                    kind=kind, name=stored, grantee=grantee, owner=team,
                    created_at=time.time(), created_by=by))
            return self._grant(conn.execute(sa.select(grants).where(
                grants.c.kind == kind, grants.c.name == stored,
                grants.c.grantee == grantee)).one(), team)

    def unshare(self, kind: str, name: str, grantee: str, team: str) -> registry_pb2.Grant:
        stored = key(team, name)
        where = (grants.c.kind == kind, grants.c.name == stored, grants.c.grantee == grantee)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(grants).where(*where).with_for_update()).first()
            if row is None:
                raise errors.NotFound(f"{kind} {name!r} is not shared with team {grantee!r}")
            conn.execute(grants.delete().where(*where))
        return self._grant(row, team)

    def list_grants(self, team: str) -> registry_pb2.ListGrantsResponse:
        def read(conn: sa.Connection) -> registry_pb2.ListGrantsResponse:
            order = (grants.c.kind, grants.c.name, grants.c.grantee)
            given = conn.execute(sa.select(grants).where(grants.c.owner == team).order_by(*order))
            received = conn.execute(sa.select(grants).where(grants.c.grantee == team)
                                    .order_by(*order))
            return registry_pb2.ListGrantsResponse(given=[self._grant(r, team) for r in given],
                                                   received=[self._grant(r, team) for r in received])

        return self.read(read)

    @staticmethod
    def _grant(row: sa.Row, team: str) -> registry_pb2.Grant:
        grant = registry_pb2.Grant(owner=row.owner, grantee=row.grantee,
                                   created_at=specs.timestamp(row.created_at), created_by=row.created_by)
        setattr(grant, f"{row.kind}_name", shown(row.name, team))
        return grant

    # -- objects --------------------------------------------------------------------------

    def pin_object(self, sha256: str, size: int, wait: float = 30.0) -> None:
        """Announce bytes about to be stored for a record; waits while a collector is removing
        the same content."""
        deadline = time.monotonic() + wait
        while True:
            with self.engine.begin() as conn:
                row = conn.execute(sa.select(objects).where(objects.c.sha256 == sha256)
                                   .with_for_update()).first()
                if row is None:
                    if _insert_new(conn, objects.insert().values(
                            sha256=sha256, size_bytes=size, state="present", pins=1,
                            updated_at=time.time())):
                        return  # else inserted concurrently: go round again and lock it
                elif row.state != "deleting":
                    conn.execute(objects.update().where(objects.c.sha256 == sha256)
                                 .values(pins=row.pins + 1, updated_at=time.time()))
                    return
            if time.monotonic() > deadline:
                raise errors.Unavailable("the same content is being removed by the garbage "
                                         "collector; retry the upload")
            time.sleep(0.05)

    def unpin_object(self, sha256: str) -> None:
        """An upload that pinned content ended without a record (failed verification, ...)."""
        with self.engine.begin() as conn:
            self._unpin(conn, sha256)

    def _unpin(self, conn: sa.Connection, sha256: str) -> None:
        conn.execute(objects.update().where(objects.c.sha256 == sha256, objects.c.pins > 0)
                     .values(pins=objects.c.pins - 1, updated_at=time.time()))

    def removable(self, sha256: str, *, stale_pin_seconds: float = STALE_PIN_SECONDS,
                  only_unknown_older_than: float | None = None) -> bool:
        """Whether `claim_for_removal` would claim this content now (for dry runs)."""
        row, referenced = self.read(lambda conn: (
            conn.execute(sa.select(objects).where(objects.c.sha256 == sha256)).first(),
            self._references(conn, sha256)))
        if referenced:
            return False
        if row is None:
            return only_unknown_older_than is not None
        return row.pins == 0 or time.time() - row.updated_at >= stale_pin_seconds

    def claim_for_removal(self, sha256: str, *, stale_pin_seconds: float = STALE_PIN_SECONDS,
                          only_unknown_older_than: float | None = None) -> bool:
        """Mark content "deleting" when no record references it and no live upload pinned it
        (stale pins are ignored). For bytes the table does not know (left by a crash before
        the pin, or by hand), `only_unknown_older_than` bounds their age."""
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(objects).where(objects.c.sha256 == sha256)
                               .with_for_update()).first()
            if self._references(conn, sha256):
                return False
            if row is None:
                if only_unknown_older_than is None:
                    return False
                conn.execute(objects.insert().values(sha256=sha256, size_bytes=0,
                                                     state="deleting", pins=0, updated_at=now))
                return True
            if row.pins > 0 and now - row.updated_at < stale_pin_seconds:
                return False
            conn.execute(objects.update().where(objects.c.sha256 == sha256)
                         .values(state="deleting", pins=0, updated_at=now))
            return True

    def unclaim(self, sha256: str) -> None:
        """Removing claimed content failed (the object store did not answer): it is present
        again, so uploads of the same bytes need not wait; the collector tries again later."""
        with self.engine.begin() as conn:
            conn.execute(objects.update().where(objects.c.sha256 == sha256,
                                                objects.c.state == "deleting")
                         .values(state="present", updated_at=time.time()))

    def forget_object(self, sha256: str) -> None:
        """The bytes of content claimed for removal are gone."""
        with self.engine.begin() as conn:
            conn.execute(objects.delete().where(objects.c.sha256 == sha256,
                                                objects.c.state == "deleting"))

    def unreferenced_objects(self) -> list[str]:
        """Known content that no record references (candidates for the collector), plus
        content a collector claimed but did not finish removing."""
        referenced = sa.union(sa.select(versions.c.sha256), sa.select(datasets.c.sha256))
        return self.read(lambda conn: list(conn.execute(sa.select(objects.c.sha256).where(
            objects.c.sha256.not_in(referenced))).scalars()))

    def usage(self) -> dict:
        """What the registry holds, for its metrics at scrape time: bytes and count of content
        that records reference, bytes nothing references, records by kind (lock-free reads)."""
        referenced = sa.union(sa.select(versions.c.sha256), sa.select(datasets.c.sha256))
        size = sa.func.coalesce(sa.func.sum(objects.c.size_bytes), 0)

        def read(conn: sa.Connection) -> dict:
            stored_bytes, stored_objects = conn.execute(
                sa.select(size, sa.func.count()).where(objects.c.sha256.in_(referenced))).one()
            unreferenced = conn.execute(sa.select(size).where(
                objects.c.sha256.not_in(referenced), objects.c.state == "present")).scalar()
            records = {kind: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                       for kind, table in (("model", models), ("model_version", versions),
                                           ("dataset", datasets), ("report", reports))}
            return {"stored_bytes": stored_bytes, "stored_objects": stored_objects,
                    "unreferenced_bytes": unreferenced, "records": records}

        return self.read(read)

    def team_bytes(self, team: str, sha256: str) -> tuple[int, bool]:
        """The bytes of the distinct content the team's versions and datasets reference, and
        whether `sha256` is among it."""
        held = sa.union(sa.select(versions.c.sha256).where(versions.c.owner == team),
                        sa.select(datasets.c.sha256).where(datasets.c.owner == team)).subquery()

        def read(conn: sa.Connection) -> tuple[int, bool]:
            total = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(objects.c.size_bytes), 0))
                                 .where(objects.c.sha256.in_(sa.select(held.c.sha256)))).scalar()
            has = conn.execute(sa.select(held.c.sha256).where(held.c.sha256 == sha256)).first()
            return int(total), has is not None

        return self.read(read)

    def job_credential_live(self, job_id: str) -> bool:
        """Whether a credential issued for the job still works (the job has not ended)."""
        now = time.time()
        return self.read(lambda conn: conn.execute(sa.select(api_keys.c.id).where(
            api_keys.c.job_id == job_id, api_keys.c.revoked_at.is_(None),
            sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now))).first()
                         is not None)

    def known_object(self, sha256: str) -> bool:
        return self.read(lambda conn: conn.execute(
            sa.select(objects.c.sha256).where(objects.c.sha256 == sha256)).first() is not None)

    @staticmethod
    def _references(conn: sa.Connection, sha256: str) -> int:
        return sum(conn.execute(sa.select(sa.func.count()).select_from(t)
                                .where(t.c.sha256 == sha256)).scalar() for t in (versions, datasets))

    # -- versions -------------------------------------------------------------------------

    def add_version(self, version: registry_pb2.ModelVersion, tags: dict[str, str],
                    owner: str, request: UploadRequest | None = None) -> registry_pb2.ModelVersion:
        """Record verified, stored bytes as the model's next version (the model is created if
        new) and release the upload's pin, in one transaction. Replayed when the upload's
        `request` already made a version (a concurrent retry committed first)."""
        version.id = f"mv-{uuid.uuid4().hex[:16]}"
        version.state = registry_pb2.VERSION_STATE_READY
        version.owner = owner
        now = time.time()
        version.created_at.CopyFrom(specs.timestamp(now))
        model_key = key(owner, version.model_name)

        def insert(conn: sa.Connection, number: int) -> None:
            if conn.execute(sa.select(models.c.name)
                            .where(models.c.name == model_key)).first() is None:
                conn.execute(models.insert().values(name=model_key, owner=owner,
                                                    description="", created_at=now))
            version.version = number
            conn.execute(versions.insert().values(
                id=version.id, model_name=model_key, version=version.version,
                job_id=version.lineage.job_id, sha256=version.sha256, created_at=now,
                parent_version_id=version.lineage.parent_version_id,
                dataset_version_id=version.lineage.dataset_version_id, owner=owner,
                proto=version.SerializeToString(), **_request_columns(request)))
            _put_tags(conn, version_tags, "version_id", version.id, tags, created_at=now)
            self._unpin(conn, version.sha256)

        self._insert_next_version(versions.c.model_name, model_key, insert,
                                  "too many concurrent uploads to this model; retry", request, owner)
        version.tags.update(tags)
        return version

    def replay(self, request: UploadRequest, team: str, *, dataset: bool = False) -> Message | None:
        """The version (or dataset) this upload request already made, None when it made none;
        ALREADY_EXISTS when the request id was used for an upload with another header."""
        table = datasets if dataset else versions
        row = self.read(lambda conn: conn.execute(
            sa.select(table.c.id, table.c.request_digest).where(table.c.request_key == request.key)).first())
        if row is None:
            return None
        if row.request_digest != request.digest:
            raise errors.AlreadyExists(
                f"request_id {request.request_id!r} was already used for a different upload ({row.id}); "
                "use a new request id for a new upload")
        return self.get_dataset(row.id, team) if dataset else self.get_version(row.id, team)

    def resolve(self, reference: str, team: str) -> str:
        """The id of the version a reference names ("mv-...", "name/N", "name/latest",
        "name@alias", "<owner>/name..." for a shared model) that the team may read; another
        team's version is NOT_FOUND, as a missing one is, unless it was shared."""
        return self.read(lambda conn: self._resolve(conn, reference, team))

    def _resolve(self, conn: sa.Connection, reference: str, team: str, *,
                 write: bool = False) -> str:
        """As `resolve`; with `write`, a version the team may only read (shared with it) is
        PERMISSION_DENIED."""
        ref = reads.parse_reference(reference, team)
        found = conn.execute(reads.target_statement(ref.kind), ref.params).scalar()
        if found is None:
            raise errors.NotFound(ref.missing)
        if write:
            model_name = conn.execute(sa.select(versions.c.model_name)
                                      .where(versions.c.id == found)).scalar()
            if owner_of(model_name) != team:
                raise self._read_only("model", model_name, team)
        return found

    def get_version(self, reference: str, team: str) -> registry_pb2.ModelVersion:
        """The team's version a reference names, with its tags and aliases (one statement)."""
        ref = reads.parse_reference(reference, team)
        rows = self.read(lambda conn: conn.execute(reads.get_statement(ref.kind),
                                                    ref.params).all())
        if not rows:
            raise errors.NotFound(ref.missing)
        found = registry_pb2.ListModelVersionsResponse()
        reads.fill(rows, found.versions)
        _name_shared(found.versions, team)
        return found.versions[0]

    def search_versions(self, request: Message, team: str, *, model_name: str = "",
                        tags: dict[str, str] | None = None, tag_keys: Sequence[str] = (),
                        alias: str = "", job_id: str = "", parent_version_id: str = "",
                        dataset_version_id: str = "", sha256: str = "", created_after: float = 0.0,
                        created_before: float = 0.0, newest_first: bool = False
                        ) -> registry_pb2.ListModelVersionsResponse:
        """Versions matching every given filter, a page at a time, ordered by creation time
        (one statement for the page with its tags and aliases). `request` (the RPC's own
        message) carries page_size/page_token and fingerprints the query for its tokens."""
        size, query_id, after = paging.keyset(request, 2)

        def page(conn: sa.Connection):
            model = self._readable(conn, "model", model_name, team) if model_name else ""
            parent = self._resolve(conn, parent_version_id, team) if parent_version_id else ""
            shape, params = reads.search_params(
                owner=owner_of(model) if model else team, model_name=model, tags=tags, tag_keys=tag_keys, alias=alias, job_id=job_id,
                dataset_version_id=dataset_version_id, parent_version_id=parent, sha256=sha256,
                created_after=created_after, created_before=created_before, after=after,
                descending=newest_first, limit=size + 1)
            rows = reads.ordered(conn.execute(reads.search_statement(shape), params),
                                 descending=newest_first)
            if not rows and model:
                self._model(conn, model, team)  # NOT_FOUND for an unknown model
            return rows

        rows = self.read(page)
        response = registry_pb2.ListModelVersionsResponse()
        reads.fill(rows[:size], response.versions)
        _name_shared(response.versions, team)
        if len(rows) > size:
            response.next_page_token = paging.encode_keyset(
                query_id, [rows[size - 1].created_at, rows[size - 1].id])
        return response

    def delete_version(self, reference: str, team: str, *, other_teams_reports: bool = False) -> str:
        """Delete a version with its tags and audit reports; returns its sha256 (whose bytes
        are freed by the caller once nothing else references them). Refused while an alias
        points at it, and while other teams' reports are about it unless
        ``other_teams_reports`` (their audits would go with it)."""
        with self.engine.begin() as conn:
            version_id = self._resolve(conn, reference, team, write=True)
            row = conn.execute(sa.select(versions.c.sha256, versions.c.model_name)
                               .where(versions.c.id == version_id)).first()
            if row is None:
                raise errors.NotFound(f"no model version with id {reference!r}")
            pointing = conn.execute(sa.select(aliases.c.alias)
                                    .where(aliases.c.version_id == version_id)).scalars().all()
            if pointing:
                raise errors.FailedPrecondition(
                    f"aliases {', '.join(sorted(pointing))} of model {plain_name(row.model_name)!r} point at "
                    "this version: move or delete them first")
            others = conn.execute(
                sa.select(reports.c.owner, sa.func.count()).where(
                    reports.c.model_version_id == version_id, reports.c.owner != team)
                .group_by(reports.c.owner).order_by(reports.c.owner)).all()
            if others and not other_teams_reports:
                count = sum(n for _, n in others)
                raise errors.FailedPrecondition(
                    f"{count} audit report{'s' if count > 1 else ''} of other teams "
                    f"({', '.join(o for o, _ in others)}) {'are' if count > 1 else 'is'} about this version "
                    "(it was shared with them): deleting it would delete their audits too. Ask them, "
                    "then delete with delete_other_teams_reports set (CLI: lambdascope rm "
                    "--including-other-teams-reports)")
            on_version = sa.select(reports.c.id).where(reports.c.model_version_id == version_id)
            conn.execute(report_pages.delete().where(report_pages.c.report_id.in_(on_version)))
            conn.execute(reports.delete().where(reports.c.model_version_id == version_id))
            conn.execute(version_tags.delete().where(version_tags.c.version_id == version_id))
            conn.execute(versions.delete().where(versions.c.id == version_id))
        return row.sha256

    def set_version_tags(self, reference: str, set_: dict[str, str], remove: Iterable[str],
                         team: str) -> dict[str, str]:
        with self.engine.begin() as conn:
            version_id = self._resolve(conn, reference, team, write=True)
            created_at = conn.execute(sa.select(versions.c.created_at)
                                      .where(versions.c.id == version_id)).scalar()
            if created_at is None:
                raise errors.NotFound(f"no model version with id {reference!r}")
            return _update_tags(conn, version_tags, "version_id", version_id, set_, remove,
                                created_at=created_at)

    # -- aliases --------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, reference: str, by: str, team: str
                  ) -> registry_pb2.Alias:
        now = time.time()
        model_name = key(team, name)
        with self.engine.begin() as conn:
            self._model(conn, model_name, team)
            version_id = self._resolve(conn, reference, team)
            target = conn.execute(sa.select(versions.c.model_name)
                                  .where(versions.c.id == version_id)).scalar()
            if target is None:
                raise errors.NotFound(f"no model version with id {reference!r}")
            if target != model_name:
                raise errors.InvalidArgument(
                    f"version {reference!r} belongs to model {shown(target, team)!r}, not {name!r}")
            current = conn.execute(sa.select(aliases.c.version_id).where(
                aliases.c.model_name == model_name, aliases.c.alias == alias)
                .with_for_update()).scalar()
            values = dict(version_id=version_id, updated_at=now, updated_by=by)
            if current is None:
                conn.execute(aliases.insert().values(model_name=model_name, alias=alias, **values))
            else:
                conn.execute(aliases.update().where(aliases.c.model_name == model_name,
                                                    aliases.c.alias == alias).values(**values))
            conn.execute(alias_events.insert().values(
                model_name=model_name, alias=alias, from_version_id=current or "",
                to_version_id=version_id, at=now, by=by))
            return self._alias(conn, model_name, alias, team)

    def delete_alias(self, name: str, alias: str, by: str, team: str) -> registry_pb2.Alias:
        model_name = key(team, name)
        with self.engine.begin() as conn:
            deleted = self._alias(conn, model_name, alias, team)
            conn.execute(aliases.delete().where(aliases.c.model_name == model_name,
                                                aliases.c.alias == alias))
            conn.execute(alias_events.insert().values(
                model_name=model_name, alias=alias, from_version_id=deleted.version_id,
                to_version_id="", at=time.time(), by=by))
        return deleted

    def list_aliases(self, name: str, team: str) -> list[registry_pb2.Alias]:
        def read(conn: sa.Connection) -> list[registry_pb2.Alias]:
            model_name = self._readable(conn, "model", name, team)
            self._model(conn, model_name, team)
            names = conn.execute(sa.select(aliases.c.alias).where(
                aliases.c.model_name == model_name).order_by(aliases.c.alias)).scalars().all()
            return [self._alias(conn, model_name, a, team) for a in names]

        return self.read(read)

    def alias_history(self, request: registry_pb2.GetAliasHistoryRequest, team: str
                      ) -> registry_pb2.GetAliasHistoryResponse:
        def page(conn: sa.Connection) -> tuple[list, str]:
            model_name = self._readable(conn, "model", request.model_name, team)
            self._model(conn, model_name, team)
            query = sa.select(alias_events).where(alias_events.c.model_name == model_name,
                                                  alias_events.c.alias == request.alias)
            return self._keyset(conn, query, request, [alias_events.c.id], lambda r: [r.id],
                                scalars=False)

        rows, token = self.read(page)
        if not rows and not request.page_token:
            raise errors.NotFound(f"model {request.model_name!r} never had an alias "
                                  f"{request.alias!r}")
        return registry_pb2.GetAliasHistoryResponse(next_page_token=token, events=[
            registry_pb2.AliasEvent(model_name=shown(r.model_name, team), alias=r.alias,
                                    from_version_id=r.from_version_id,
                                    to_version_id=r.to_version_id, at=specs.timestamp(r.at), by=r.by)
            for r in rows])

    def _alias(self, conn: sa.Connection, model_name: str, alias: str, team: str
               ) -> registry_pb2.Alias:
        row = conn.execute(
            sa.select(aliases, versions.c.version).join(versions,
                                                        versions.c.id == aliases.c.version_id)
            .where(aliases.c.model_name == model_name, aliases.c.alias == alias)).first()
        if row is None:
            raise errors.NotFound(f"model {shown(model_name, team)!r} has no alias {alias!r}")
        return registry_pb2.Alias(model_name=shown(model_name, team), alias=alias,
                                  version_id=row.version_id,
                                  version=row.version, updated_at=specs.timestamp(row.updated_at),
                                  updated_by=row.updated_by)

    # -- datasets -------------------------------------------------------------------------

    def add_dataset(self, dataset: registry_pb2.Dataset, tags: dict[str, str], owner: str,
                    request: UploadRequest | None = None) -> registry_pb2.Dataset:
        """As `add_version`, for a dataset: the next version of its name."""
        dataset.id = f"ds-{uuid.uuid4().hex[:16]}"
        dataset.owner = owner
        now = time.time()
        dataset.created_at.CopyFrom(specs.timestamp(now))
        stored_name = key(owner, dataset.name)

        def insert(conn: sa.Connection, number: int) -> None:
            dataset.version = number
            conn.execute(datasets.insert().values(
                id=dataset.id, name=stored_name, sha256=dataset.sha256, created_at=now,
                version=dataset.version, owner=owner, proto=dataset.SerializeToString(),
                **_request_columns(request)))
            _put_tags(conn, dataset_tags, "dataset_id", dataset.id, tags)
            self._unpin(conn, dataset.sha256)

        self._insert_next_version(datasets.c.name, stored_name, insert,
                                  "too many concurrent uploads of this dataset name; retry", request, owner)
        dataset.tags.update(tags)
        return dataset

    def get_dataset(self, dataset_id: str, team: str) -> registry_pb2.Dataset:

        def read(conn: sa.Connection) -> registry_pb2.Dataset:
            blob = conn.execute(sa.select(datasets.c.proto).where(
                datasets.c.id == dataset_id, _readable_datasets(team))).scalar()
            if blob is None:
                raise errors.NotFound(f"no dataset with id {dataset_id!r}")
            return self._decorate_datasets(conn, [registry_pb2.Dataset.FromString(blob)], team)[0]

        return self.read(read)

    def list_datasets(self, request: registry_pb2.ListDatasetsRequest, team: str
                      ) -> registry_pb2.ListDatasetsResponse:
        """The team's datasets and those shared with it; `name` may be "<owner>/<name>"."""
        query = sa.select(datasets.c.proto, datasets.c.created_at, datasets.c.id).where(
            _readable_datasets(team))
        if request.name:
            query = query.where(datasets.c.name == qualify(team, request.name))
        if request.sha256:
            query = query.where(datasets.c.sha256 == request.sha256)

        def page(conn: sa.Connection) -> registry_pb2.ListDatasetsResponse:
            rows, token = self._keyset(conn, query, request, [datasets.c.created_at, datasets.c.id],
                                       lambda r: [r.created_at, r.id], scalars=False)
            found = self._decorate_datasets(conn, [registry_pb2.Dataset.FromString(r.proto)
                                                   for r in rows], team)
            return registry_pb2.ListDatasetsResponse(datasets=found, next_page_token=token)

        return self.read(page)

    def delete_dataset(self, dataset_id: str, team: str) -> str:
        with self.engine.begin() as conn:
            sha = self._own_dataset(conn, dataset_id, team).sha256
            users = _lineage_users(conn, dataset_id, team)
            if users:
                raise errors.FailedPrecondition(f"{users} record this dataset in their lineage: delete them first")
            conn.execute(dataset_tags.delete().where(dataset_tags.c.dataset_id == dataset_id))
            conn.execute(datasets.delete().where(datasets.c.id == dataset_id))
        return sha

    def set_dataset_tags(self, dataset_id: str, set_: dict[str, str], remove: Iterable[str],
                         team: str) -> dict[str, str]:
        with self.engine.begin() as conn:
            self._own_dataset(conn, dataset_id, team)
            return _update_tags(conn, dataset_tags, "dataset_id", dataset_id, set_, remove)

    def _own_dataset(self, conn: sa.Connection, dataset_id: str, team: str) -> sa.Row:
        """A dataset the team may write: NOT_FOUND unless readable, PERMISSION_DENIED when it
        was only shared with the team."""
        row = conn.execute(sa.select(datasets.c.sha256, datasets.c.name).where(
            datasets.c.id == dataset_id, _readable_datasets(team))).first()
        if row is None:
            raise errors.NotFound(f"no dataset with id {dataset_id!r}")
        if owner_of(row.name) != team:
            raise self._read_only("dataset", row.name, team)
        return row

    def _decorate_datasets(self, conn: sa.Connection, found: list[registry_pb2.Dataset],
                           team: str) -> list[registry_pb2.Dataset]:
        _name_shared(found, team)
        by_id = {d.id: d for d in found}
        if by_id:
            for row in conn.execute(sa.select(dataset_tags)
                                    .where(dataset_tags.c.dataset_id.in_(list(by_id)))):
                by_id[row.dataset_id].tags[row.key] = row.value
        return found

    # -- reports --------------------------------------------------------------------------

    def add_report(self, report: audit_pb2.AuditReport, team: str, html: bytes = b"") -> audit_pb2.AuditReport:
        """Store a report of the team, on a version and dataset the team can read, with its HTML
        page when given (both or neither)."""
        report.model_version_id = self.get_version(report.model_version_id, team).id
        if report.dataset_id:
            self.get_dataset(report.dataset_id, team)
        report.id = f"rep-{uuid.uuid4().hex[:16]}"
        now = time.time()
        report.created_at.CopyFrom(specs.timestamp(now))
        with self.engine.begin() as conn:
            conn.execute(reports.insert().values(id=report.id,
                                                 model_version_id=report.model_version_id,
                                                 created_at=now, proto=report.SerializeToString(),
                                                 owner=team))
            if html:
                conn.execute(report_pages.insert().values(report_id=report.id, html=html))
        return report

    def get_report_page(self, report_id: str, team: str) -> bytes:
        row = self.read(lambda conn: conn.execute(
            sa.select(reports.c.id, report_pages.c.html)
            .select_from(reports.outerjoin(report_pages, report_pages.c.report_id == reports.c.id))
            .where(reports.c.id == report_id, reports.c.owner == team)).first())
        if row is None:
            raise errors.NotFound(f"no audit report with id {report_id!r}")
        if row.html is None:
            raise errors.NotFound(f"audit report {report_id} has no HTML page (it was stored without one); "
                                  "`lambdascope report` renders one from the report itself")
        return row.html

    def get_report(self, report_id: str, team: str) -> audit_pb2.AuditReport:
        blob = self.read(lambda conn: conn.execute(sa.select(reports.c.proto).where(
            reports.c.id == report_id, reports.c.owner == team)).scalar())
        if blob is None:
            raise errors.NotFound(f"no audit report with id {report_id!r}")
        return audit_pb2.AuditReport.FromString(blob)

    def list_reports(self, request: registry_pb2.ListReportsRequest, team: str
                     ) -> registry_pb2.ListReportsResponse:
        query = sa.select(reports.c.proto, reports.c.created_at, reports.c.id).where(
            reports.c.owner == team)
        if request.model_version_id:
            version_id = self.get_version(request.model_version_id, team).id
            query = query.where(reports.c.model_version_id == version_id)
        rows, token = self.read(lambda conn: self._keyset(
            conn, query, request, [reports.c.created_at, reports.c.id],
            lambda r: [r.created_at, r.id], scalars=False))
        return registry_pb2.ListReportsResponse(
            reports=[audit_pb2.AuditReport.FromString(r.proto) for r in rows],
            next_page_token=token)

    # -- writing ----------------------------------------------------------------------------

    def _insert_next_version(self, name_column: sa.Column, name: str,
                             insert: Callable[[sa.Connection, int], None], busy: str,
                             request: UploadRequest | None, team: str) -> None:
        """Run `insert(conn, number)` in one transaction, `number` being one past the highest
        version of `name` (a model's or a dataset's stored key; `name_column` of a table with
        a `version` column). Two writers may pick the same number: a unique index refuses the
        second one's insert (or its creating the same new model, or a concurrent retry's taking
        the same request key), and it tries again with the next number, up to 50 times; then
        UNAVAILABLE, saying `busy`. Replayed when the upload's `request` made a record already."""
        table = name_column.table
        version_column = table.c.version
        for _attempt in range(50):
            try:
                with self.engine.begin() as conn:
                    latest = conn.execute(sa.select(sa.func.max(version_column))
                                          .where(name_column == name)).scalar()
                    insert(conn, (latest or 0) + 1)
                return
            except sa.exc.IntegrityError:
                # a concurrent retry of this upload committed first (its request key is taken) ...
                found = self.replay(request, team, dataset=table is datasets) if request is not None else None
                if found is not None:
                    raise Replayed(found) from None
                time.sleep(0.01)  # ... or a concurrent upload took this number (or created the model)
        raise errors.Unavailable(busy)

    # -- paging ---------------------------------------------------------------------------

    def _keyset(self, conn: sa.Connection, query: sa.Select, request: Message, keys: list, key_of,
                *, scalars: bool = True) -> tuple[list, str]:
        """One page of `query` ordered by `keys` (unique together), starting after the key in
        the request's page token; the next token ("" at the end) carries the last key."""
        size, query_id, after = paging.keyset(request, len(keys))
        if after is not None:
            query = query.where(sa.tuple_(*keys) > sa.tuple_(*after))
        query = query.order_by(None).order_by(*keys)
        result = conn.execute(query.limit(size + 1))
        rows = result.scalars().all() if scalars else result.all()
        page = list(rows[:size])
        token = paging.encode_keyset(query_id, key_of(page[-1])) if len(rows) > size else ""
        return page, token


def _name_shared(records: Iterable[Message], team: str) -> None:
    """Name the versions or datasets of another team (shared with `team`) as the team names
    them: "<owner>/<name>" (records from before teams carry no owner: the default team's, not
    shared)."""
    for record in records:
        if record.owner and record.owner != team:
            field = "model_name" if isinstance(record, registry_pb2.ModelVersion) else "name"
            setattr(record, field, f"{record.owner}/{getattr(record, field)}")


def _insert_new(conn: sa.Connection, insert: sa.Insert) -> bool:
    """Run `insert` in a savepoint: False, with the transaction still usable, when a unique
    index refused it (a concurrent writer inserted the same key first)."""
    try:
        with conn.begin_nested():
            conn.execute(insert)
        return True
    except sa.exc.IntegrityError:
        return False


def _readable_datasets(team: str) -> sa.ColumnElement:
    """Datasets `team` may read: its own and those shared with it."""
    return sa.or_(datasets.c.owner == team,
                  datasets.c.name.in_(reads.granted_names("dataset", sa.literal(team))))


def _put_tags(conn: sa.Connection, table: sa.Table, column: str, owner_id: str,
              tags: dict[str, str], **row: object) -> None:
    """Insert tag rows; `row` holds further columns every row gets (a version's created_at)."""
    if tags:
        conn.execute(table.insert(), [{column: owner_id, "key": k, "value": v, **row}
                                      for k, v in tags.items()])


def _lineage_users(conn: sa.Connection, dataset_id: str, team: str, shown: int = 5) -> str:
    """The model versions whose lineage records a dataset, as its owner may see them: the team's
    own by id (the first ``shown``), other teams' (the dataset was shared with them) only counted
    per team, since their ids are theirs; "" when there are none."""
    uses = versions.c.dataset_version_id == dataset_id
    own = conn.execute(sa.select(versions.c.id).where(uses, versions.c.owner == team)
                       .order_by(versions.c.id).limit(shown + 1)).scalars().all()
    others = conn.execute(sa.select(versions.c.owner, sa.func.count()).where(uses, versions.c.owner != team)
                          .group_by(versions.c.owner).order_by(versions.c.owner)).all()
    parts = []
    if own:
        parts.append(f"model versions {', '.join(own[:shown])}{' and more' if len(own) > shown else ''}")
    if others:
        count = sum(n for _, n in others)
        parts.append(f"{count} model version{'s' if count > 1 else ''} of other teams "
                     f"({', '.join(f'{o}: {n}' for o, n in others)}; the dataset was shared with them)")
    return " and ".join(parts)


def _update_tags(conn: sa.Connection, table: sa.Table, column: str, owner_id: str,
                 set_: dict[str, str], remove: Iterable[str], **row: object) -> dict[str, str]:
    owner_col = table.c[column]
    drop = set(remove) | set(set_)
    if drop:
        conn.execute(table.delete().where(owner_col == owner_id, table.c.key.in_(drop)))
    _put_tags(conn, table, column, owner_id, set_, **row)
    rows = conn.execute(sa.select(table.c.key, table.c.value).where(owner_col == owner_id))
    return dict(sorted((r.key, r.value) for r in rows))


def _request_columns(request: UploadRequest | None) -> dict[str, str | None]:
    return {"request_key": request.key if request else None,
            "request_digest": request.digest if request else None}
