"""Teams and API keys in the registry's database, and the check of a presented key.

A key's secret is stored only as a salted scrypt hash (lambdascope.auth.SCRYPT). Every check
costs one scrypt unless the exact key was verified before by this process: a wrong, unknown or
malformed key runs scrypt against a dummy hash, so a refusal takes as long as a first success and
says nothing about which part was wrong. A cached key is still looked up on every call (one
indexed read), so revocation and expiry apply at once on every replica.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time

import sqlalchemy as sa

from lambdascope import auth, errors, specs
from lambdascope.v1 import identity_pb2
from services.registry.schema import api_keys, teams
from services.registry.store import RegistryStore

MAX_EXPIRES_DAYS = 3650
_DUMMY_SALT = os.urandom(16)
_DUMMY_HASH = auth.hash_secret("x" * 43, _DUMMY_SALT)
_CACHE_LIMIT = 10_000


def _unauthenticated() -> errors.Unauthenticated:
    # One message for every refusal: it must not say whether the id, the secret, a revocation
    # or an expiry was the reason.
    return errors.Unauthenticated(
        "missing, wrong, revoked or expired API key: send 'authorization: Bearer <key>' "
        "(the CLI and SDK send LAMBDASCOPE_API_KEY or --api-key; an admin creates keys with "
        "`lambdascope admin key create`)")


class Identities:
    def __init__(self, store: RegistryStore):
        self.store = store
        self._verified: dict[bytes, str] = {}  # sha256 of a whole key -> its id
        self._lock = threading.Lock()

    # -- teams ----------------------------------------------------------------------------

    def create_team(self, name: str) -> identity_pb2.Team:
        check_team_name(name)
        now = time.time()
        try:
            with self.store.engine.begin() as conn:
                conn.execute(teams.insert().values(name=name, created_at=now))
        except sa.exc.IntegrityError:
            raise errors.AlreadyExists(f"team {name!r} already exists") from None
        return identity_pb2.Team(name=name, created_at=specs.timestamp(now))

    def ensure_team(self, name: str) -> None:
        try:
            self.create_team(name)
        except errors.AlreadyExists:
            pass

    def team_exists(self, name: str) -> bool:
        return self.store.read(lambda conn: conn.execute(
            sa.select(teams.c.name).where(teams.c.name == name)).first()) is not None

    def list_teams(self) -> list[identity_pb2.Team]:
        rows = self.store.read(lambda conn: conn.execute(
            sa.select(teams).order_by(teams.c.name)).all())
        return [identity_pb2.Team(name=r.name, created_at=specs.timestamp(r.created_at)) for r in rows]

    # -- keys -----------------------------------------------------------------------------

    def create_key(self, team: str, role: int, *, expires_seconds: float = 0.0,
                   description: str = "", created_by: str = "", job_id: str = "",
                   user: str = "") -> identity_pb2.CreatedKey:
        if role not in auth.ROLE_NAMES:
            raise errors.InvalidArgument("role must be reader, writer or admin")
        if not self.team_exists(team):
            raise errors.NotFound(f"no team named {team!r}: create it first with "
                                  "`lambdascope admin team create`")
        key_id, key = auth.new_key()
        self._insert(key_id, key, team, role, expires_seconds, description, created_by, job_id,
                     user)
        return identity_pb2.CreatedKey(key=self.get_key(key_id), secret=key)

    def install_key(self, key: str, team: str, role: int, description: str) -> None:
        """Make `key` (given whole, e.g. from a Kubernetes Secret or `lambdascope up`'s key
        file) a valid key of `team`: inserted when its id is new, its hash replaced when the
        same id comes with another secret."""
        parts = auth.split_key(key)
        if parts is None:
            raise ValueError("the admin key is not of the form lsk_<16 hex>_<43 characters>; "
                             "create one with `python -m lambdascope.auth`")
        self.ensure_team(team)
        key_id, secret = parts
        row = self.store.read(lambda conn: conn.execute(
            sa.select(api_keys).where(api_keys.c.id == key_id)).first())
        if row is None:
            self._insert(key_id, key, team, role, 0.0, description, "", "", "admin")
        elif not hmac.compare_digest(auth.hash_secret(secret, row.salt), row.hash) \
                or row.revoked_at is not None:
            salt = os.urandom(16)
            with self.store.engine.begin() as conn:
                conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(
                    salt=salt, hash=auth.hash_secret(secret, salt), revoked_at=None,
                    team=team, role=role))
            self._forget(key_id)

    def _insert(self, key_id: str, key: str, team: str, role: int, expires_seconds: float,
                description: str, created_by: str, job_id: str, user: str) -> None:
        _, secret = auth.split_key(key)
        salt = os.urandom(16)
        now = time.time()
        with self.store.engine.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=key_id, team=team, role=role, salt=salt, hash=auth.hash_secret(secret, salt),
                description=description, created_at=now, created_by=created_by,
                expires_at=now + expires_seconds if expires_seconds > 0 else None,
                revoked_at=None, job_id=job_id, user_name=user))

    def get_key(self, key_id: str) -> identity_pb2.ApiKey:
        row = self.store.read(lambda conn: conn.execute(
            sa.select(api_keys).where(api_keys.c.id == key_id)).first())
        if row is None:
            raise errors.NotFound(f"no API key with id {key_id!r}")
        return _key(row)

    def list_keys(self, team: str = "", include_revoked: bool = False) -> list[identity_pb2.ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.team, api_keys.c.created_at, api_keys.c.id)
        if team:
            query = query.where(api_keys.c.team == team)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        return [_key(r) for r in self.store.read(lambda conn: conn.execute(query).all())]

    def revoke(self, key_id: str) -> identity_pb2.ApiKey:
        with self.store.engine.begin() as conn:
            done = conn.execute(api_keys.update().where(
                api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(
                revoked_at=time.time()))
            if done.rowcount == 0 and conn.execute(sa.select(api_keys.c.id).where(
                    api_keys.c.id == key_id)).first() is None:
                raise errors.NotFound(f"no API key with id {key_id!r}")
        self._forget(key_id)
        return self.get_key(key_id)

    # -- checking a presented key -----------------------------------------------------------

    def authenticate(self, key: str, acting_team: str = "") -> auth.Principal:
        """The principal of `key` (see lambdascope.auth.Authenticator)."""
        digest = hashlib.sha256(key.encode()).digest()
        parts = auth.split_key(key)
        key_id, secret = parts if parts else ("", "x" * 43)
        row = self.store.read(lambda conn: conn.execute(
            sa.select(api_keys).where(api_keys.c.id == key_id)).first()) if key_id else None
        with self._lock:
            known = self._verified.get(digest) == key_id and row is not None
        if not known:
            salt, stored = (row.salt, row.hash) if row is not None else (_DUMMY_SALT, _DUMMY_HASH)
            matches = hmac.compare_digest(auth.hash_secret(secret, salt), stored)
            if not (matches and row is not None and parts is not None):
                raise _unauthenticated()
            with self._lock:
                if len(self._verified) >= _CACHE_LIMIT:
                    self._verified.clear()
                self._verified[digest] = key_id
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= time.time()):
            raise _unauthenticated()
        team = row.team
        if acting_team and acting_team != team:
            if row.role != auth.Role.ROLE_ADMIN:
                raise errors.PermissionDenied(
                    f"this key belongs to team {team!r}; only an admin key may act for another "
                    f"team ({auth.TEAM_HEADER})", reason="acting_team")
            if not self.team_exists(acting_team):
                raise errors.NotFound(f"no team named {acting_team!r}")
            team = acting_team
        return auth.Principal(key_id, team, row.role, row.job_id, row.user_name)

    def _forget(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, k in self._verified.items() if k == key_id]:
                del self._verified[digest]


def check_team_name(name: str) -> None:
    if not auth.TEAM.match(name):
        raise errors.InvalidArgument(
            f"team name {name!r} is not valid: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")


def _key(row: sa.Row) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        id=row.id, team=row.team, role=row.role, description=row.description,
        created_at=specs.timestamp(row.created_at), expires_at=specs.timestamp(row.expires_at),
        revoked_at=specs.timestamp(row.revoked_at), created_by=row.created_by, job_id=row.job_id,
        user=row.user_name)
