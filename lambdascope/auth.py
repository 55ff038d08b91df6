"""Who is calling, and whether they may: API keys, roles, and the access level each RPC declares.

A key is ``lsk_<id>_<secret>``: the id is public (listed, revoked, logged), the secret is not and
servers keep only its scrypt hash (services/registry/identities.py). Every RPC declares the access
it needs as a method option in protos/ (access.proto); lambdascope.server authenticates each call
with an `Authenticator`, compares the key's role with that level, and makes the caller's
`Principal` available to the servicer through `current()`.
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import re
import secrets
from collections.abc import Iterator
from typing import Protocol

import grpc
from google.protobuf import descriptor_pool

from lambdascope import errors
from lambdascope.v1 import access_pb2, identity_pb2

KEY = re.compile(r"^lsk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
TEAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TEAM_HEADER = "x-lambdascope-team"
# scrypt at 16 MiB and about 70 ms per check: slow for a guesser, cached per verified key.
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 2**20}

Role = identity_pb2.Role
ROLE_NAMES = {Role.ROLE_READER: "reader", Role.ROLE_WRITER: "writer", Role.ROLE_ADMIN: "admin"}
# The highest access level each role reaches.
_REACH = {Role.ROLE_READER: access_pb2.ACCESS_READER, Role.ROLE_WRITER: access_pb2.ACCESS_WRITER,
          Role.ROLE_ADMIN: access_pb2.ACCESS_ADMIN}


@dataclasses.dataclass(frozen=True)
class Principal:
    """A verified caller: its key, the team it acts for, its role, its job if a worker, and the
    user its key is for."""

    key_id: str
    team: str
    role: int
    job_id: str = ""
    user: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ROLE_ADMIN

    def to_proto(self) -> identity_pb2.Principal:
        return identity_pb2.Principal(key_id=self.key_id, team=self.team, role=self.role,
                                      job_id=self.job_id, user=self.user)

    @classmethod
    def from_proto(cls, p: identity_pb2.Principal) -> Principal:
        return cls(p.key_id, p.team, p.role, p.job_id, p.user)


class Authenticator(Protocol):
    def __call__(self, key: str, acting_team: str) -> Principal:
        """The principal of `key`, acting for `acting_team` when given (admin keys only);
        raises errors.Unauthenticated for a missing, wrong, revoked or expired key."""


def role_name(role: int) -> str:
    return ROLE_NAMES.get(role, "none")


def parse_role(name: str) -> int:
    for role, text in ROLE_NAMES.items():
        if name.lower() in (text, f"role_{text}"):
            return role
    raise ValueError(f"unknown role {name!r}: use reader, writer or admin")


def allows(role: int, access: int) -> bool:
    """Whether a key of `role` may call an RPC that declares `access`."""
    if access == access_pb2.ACCESS_AUTHENTICATED:
        return role in _REACH
    return access != access_pb2.ACCESS_UNSPECIFIED and _REACH.get(role, 0) >= access


@functools.cache
def access_of(service: str, method: str) -> int:
    """The access level RPC `service/method` declares (ACCESS_UNSPECIFIED when it declares
    none or is unknown: such a call is refused)."""
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    except KeyError:
        return access_pb2.ACCESS_UNSPECIFIED
    if found is None:
        return access_pb2.ACCESS_UNSPECIFIED
    return found.GetOptions().Extensions[access_pb2.access]


def writes(service: str, method: str) -> bool:
    """Whether RPC `service/method` changes state (its `(writes)` option): every call of it
    goes into the audit trail."""
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    except KeyError:
        return False
    return found is not None and found.GetOptions().Extensions[access_pb2.writes]


# -- keys -----------------------------------------------------------------------------------


def new_key() -> tuple[str, str]:
    """(key id, whole key) for a new key; the secret part carries 256 random bits."""
    key_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return key_id, f"lsk_{key_id}_{secret}"


def split_key(key: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, None otherwise."""
    match = KEY.match(key)
    return (match["id"], match["secret"]) if match else None


def hash_secret(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **SCRYPT)


def bearer(metadata) -> str:
    """The key in `authorization: Bearer <key>` metadata ("" when absent)."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return ""


def acting_team(metadata) -> str:
    for key, value in metadata or ():
        if key == TEAM_HEADER:
            return value
    return ""


# -- the caller of the RPC being served ------------------------------------------------------

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)
# The caller's own metadata (key, acting team), so calls made for it carry it on (forwarded()).
_presented: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("presented",
                                                                              default=("", ""))


def current() -> Principal:
    """The verified caller of the RPC this thread serves."""
    principal = _current.get()
    if principal is None:  # an RPC served without the interceptor: a wiring bug, never allowed
        raise errors.Unauthenticated("no verified caller for this call")
    return principal


@contextlib.contextmanager
def acting_as(principal: Principal, key: str = "", team: str = "") -> Iterator[None]:
    """Serve the code inside for `principal`, who presented `key` (and asked to act for `team`)."""
    tokens = _current.set(principal), _presented.set((key, team))
    try:
        yield
    finally:
        _current.reset(tokens[0])
        _presented.reset(tokens[1])


def forwarded() -> list[tuple[str, str]]:
    """Metadata that makes a call to another service on behalf of the current caller: the
    trainer and estimator read the registry with the caller's own key, never one of their own."""
    key, team = _presented.get()
    if not key:
        return []
    return [("authorization", f"Bearer {key}")] + ([(TEAM_HEADER, team)] if team else [])


class RemoteAuthenticator:
    """Asks the registry's Identity service who a key belongs to (the trainer and estimator
    keep no keys). No cache: a revoked key is refused on its next call everywhere; the registry
    makes repeated checks of a key cheap."""

    def __init__(self, channel: grpc.Channel, timeout: float = 10.0):
        from lambdascope.v1 import identity_pb2_grpc

        self.stub = identity_pb2_grpc.IdentityStub(channel)
        self.timeout = timeout

    def __call__(self, key: str, acting_team: str) -> Principal:
        metadata = [("authorization", f"Bearer {key}")]
        if acting_team:
            metadata.append((TEAM_HEADER, acting_team))
        try:
            reply = self.stub.WhoAmI(identity_pb2.WhoAmIRequest(), metadata=metadata,
                                     timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise errors.Unauthenticated(exc.details()) from None
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise errors.PermissionDenied(exc.details()) from None
            raise errors.Unavailable(f"cannot check the caller's key: the registry answered "
                                     f"{code.name} ({exc.details()})") from None
        return Principal.from_proto(reply)


if __name__ == "__main__":  # `python -m lambdascope.auth`: a fresh key, e.g. for a Secret
    print(new_key()[1])
