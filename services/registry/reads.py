"""Read statements for model versions: one round trip per call, built once per shape.

A get or a page of versions is answered by one statement: one row per version (the page is a
CTE) with its tags and its aliases aggregated into a string each. Each statement is built once
per *shape* (which filters a search uses, which kind of reference a get names) with bind
parameters for every value, so its SQL text never changes: SQLAlchemy reuses the compiled form
and psycopg prepares the text on the server after a few executions, instead of the statement
being rebuilt, re-keyed and re-planned on every call.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from typing import Protocol

import sqlalchemy as sa

from lambdascope.v1 import registry_pb2
from services.registry.schema import aliases, grants, version_tags, versions

# "name/latest", "name/3", "name@alias": references accepted wherever a version id is; a model
# another team shared is named with its team first ("team-a/mlp/3", "team-a/mlp@production").
REFERENCE = re.compile(r"^(?:(?P<team>[^/@]+)/)?(?P<name>[^/@]+)"
                       r"(?:/(?P<number>latest|[0-9]+)|@(?P<alias>[^/@]+))$")

# Separators inside the aggregated tag and alias strings (ASCII unit and record separators).
KEY_SEP, ENTRY_SEP = "\x1f", "\x1e"


def model_key(team: str, name: str) -> str:
    """How a team's model (or dataset) name is stored: "<team>/<name>". Names are unique per
    team, and neither part may hold a '/'."""
    return f"{team}/{name}"


def plain_name(key: str) -> str:
    """The name a team sees of a stored "<team>/<name>"."""
    return key.split("/", 1)[-1]


def qualify(team: str, name: str) -> str:
    """The stored key a caller of `team` means by `name`: its own "mlp", or "team-a/mlp"
    (another team's, readable only when shared)."""
    return name if "/" in name else model_key(team, name)


def owner_of(key: str) -> str:
    return key.split("/", 1)[0]


def shown(key: str, team: str) -> str:
    """A stored name as `team` sees it: plain for its own, "<owner>/<name>" for another's."""
    return plain_name(key) if owner_of(key) == team else key


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a version reference names, for one caller's team: kind is "id", "latest",
    "number" or "alias"; params bind the statements below (the model's stored key, the
    caller's team)."""

    kind: str
    params: dict
    text: str

    @property
    def missing(self) -> str:
        """The NOT_FOUND message when nothing matches: the same for another team's version
        (not shared with the caller) as for one that does not exist."""
        p = self.params
        name = shown(p.get("name", ""), p["team"])
        return {"id": f"no model version with id {self.text!r}",
                "latest": f"no versions of model {name!r}",
                "number": f"no version {p.get('number')} of model {name!r}",
                "alias": f"no alias {p.get('alias')!r} of model {name!r}"}[self.kind]


def parse_reference(reference: str, team: str) -> Reference:
    match = REFERENCE.match(reference)
    if reference.startswith("mv-") or match is None:
        return Reference("id", {"id": reference, "team": team}, reference)
    name = model_key(match["team"] or team, match["name"])
    if match["alias"]:
        return Reference("alias", {"name": name, "alias": match["alias"], "team": team}, reference)
    if match["number"] == "latest":
        return Reference("latest", {"name": name, "team": team}, reference)
    return Reference("number", {"name": name, "number": int(match["number"]), "team": team},
                     reference)


def granted_names(kind: str, team: sa.BindParameter) -> sa.Select:
    """The stored names of `kind` ("model" or "dataset") other teams shared with `team`."""
    return sa.select(grants.c.name).where(grants.c.grantee == team, grants.c.kind == kind)


def readable_versions() -> sa.ColumnElement:
    """Versions the caller's team (bound as "team") may read: its own and those of models
    shared with it."""
    team = sa.bindparam("team")
    return sa.or_(versions.c.owner == team, versions.c.model_name.in_(granted_names("model", team)))


@functools.cache
def target_statement(kind: str) -> sa.Select:
    """The id a reference of this kind names, as a one-row select (versions the caller's team
    may read only)."""
    name = versions.c.model_name == sa.bindparam("name")
    readable = readable_versions()
    if kind == "id":
        return sa.select(versions.c.id).where(versions.c.id == sa.bindparam("id"), readable)
    if kind == "latest":
        return (sa.select(versions.c.id).where(name, readable)
                .order_by(versions.c.version.desc()).limit(1))
    if kind == "number":
        return sa.select(versions.c.id).where(name, readable,
                                              versions.c.version == sa.bindparam("number"))
    if kind == "alias":
        return (sa.select(aliases.c.version_id)
                .join(versions, versions.c.id == aliases.c.version_id)
                .where(aliases.c.model_name == sa.bindparam("name"),
                       aliases.c.alias == sa.bindparam("alias"), readable))
    raise ValueError(f"unknown reference kind {kind!r}")


@functools.cache
def get_statement(kind: str) -> sa.Select:
    """The version a reference names, with its tags and aliases."""
    page = (sa.select(versions.c.id, versions.c.proto, versions.c.created_at)
            .where(versions.c.id == target_statement(kind).scalar_subquery()))
    return _decorated(page)


@dataclasses.dataclass(frozen=True)
class SearchShape:
    """Which filters a search uses (not their values): one statement per shape."""

    model: bool = False
    tags: int = 0
    tag_keys: int = 0
    alias: bool = False
    job: bool = False
    dataset: bool = False
    parent: bool = False
    sha256: bool = False
    created_after: bool = False
    created_before: bool = False
    after_key: bool = False
    descending: bool = False


@functools.lru_cache(maxsize=512)
def search_statement(shape: SearchShape) -> sa.Select:
    """A page of one owner's versions matching the shape's filters, ordered by (created_at, id),
    with `limit` rows at most; parameters named as `search_params` names them."""
    query = sa.select(versions.c.id, versions.c.proto, versions.c.created_at).where(
        versions.c.owner == sa.bindparam("owner"))
    keys: tuple[sa.ColumnElement, ...] = (versions.c.created_at, versions.c.id)
    first_tag = 0
    if shape.tags and not shape.model:
        # Walk the first tag's (key, value, created_at, version_id) index in page order. With a
        # model name, its (model_name, created_at, id) index usually narrows more.
        driver = version_tags.alias("page_tag")
        query = query.join_from(driver, versions, versions.c.id == driver.c.version_id).where(
            driver.c.key == sa.bindparam("tag_key_0"), driver.c.value == sa.bindparam("tag_value_0"))
        keys, first_tag = (driver.c.created_at, driver.c.version_id), 1
    if shape.model:
        query = query.where(versions.c.model_name == sa.bindparam("model"))
    if shape.alias:
        named = sa.select(aliases.c.version_id).where(aliases.c.alias == sa.bindparam("alias"))
        if shape.model:
            named = named.where(aliases.c.model_name == sa.bindparam("model"))
        query = query.where(versions.c.id.in_(named))
    for i in range(first_tag, shape.tags):
        query = query.where(versions.c.id.in_(sa.select(version_tags.c.version_id).where(
            version_tags.c.key == sa.bindparam(f"tag_key_{i}"),
            version_tags.c.value == sa.bindparam(f"tag_value_{i}"))))
    for i in range(shape.tag_keys):
        query = query.where(versions.c.id.in_(sa.select(version_tags.c.version_id).where(
            version_tags.c.key == sa.bindparam(f"has_key_{i}"))))
    for flag, column, param in ((shape.job, versions.c.job_id, "job"),
                                (shape.dataset, versions.c.dataset_version_id, "dataset"),
                                (shape.parent, versions.c.parent_version_id, "parent"),
                                (shape.sha256, versions.c.sha256, "sha256")):
        if flag:
            query = query.where(column == sa.bindparam(param))
    if shape.created_after:
        query = query.where(keys[0] > sa.bindparam("created_after"))
    if shape.created_before:
        query = query.where(keys[0] < sa.bindparam("created_before"))
    if shape.after_key:
        bound = sa.tuple_(*keys)
        after = sa.tuple_(sa.bindparam("after_created_at", type_=sa.Float),
                          sa.bindparam("after_id", type_=sa.String))
        query = query.where(bound < after if shape.descending else bound > after)
    query = query.order_by(*(k.desc() if shape.descending else k for k in keys))
    return _decorated(query.limit(sa.bindparam("limit", type_=sa.Integer)))


def search_params(*, owner: str, model_name: str = "", tags: dict[str, str] | None = None,
                  tag_keys: Iterable[str] = (), alias: str = "", job_id: str = "",
                  dataset_version_id: str = "", parent_version_id: str = "", sha256: str = "",
                  created_after: float = 0.0, created_before: float = 0.0,
                  after: list | None = None, descending: bool = False,
                  limit: int) -> tuple[SearchShape, dict]:
    """The shape of a search and the values to bind (model_name: the model's stored key;
    owner: the team whose versions are searched, the caller's or one that shared the model)."""
    tags, tag_keys = dict(tags or {}), list(tag_keys)
    params: dict = {"limit": limit, "owner": owner}
    for i, (k, v) in enumerate(sorted(tags.items())):
        params[f"tag_key_{i}"], params[f"tag_value_{i}"] = k, v
    for i, k in enumerate(tag_keys):
        params[f"has_key_{i}"] = k
    for name, value in (("model", model_name), ("alias", alias), ("job", job_id),
                        ("dataset", dataset_version_id), ("parent", parent_version_id), ("sha256", sha256),
                        ("created_after", created_after), ("created_before", created_before)):
        if value:
            params[name] = value
    if after is not None:
        params["after_created_at"], params["after_id"] = after
    shape = SearchShape(model=bool(model_name), tags=len(tags), tag_keys=len(tag_keys),
                        alias=bool(alias), job=bool(job_id), dataset=bool(dataset_version_id),
                        parent=bool(parent_version_id), sha256=bool(sha256), created_after=bool(created_after),
                        created_before=bool(created_before), after_key=after is not None,
                        descending=descending)
    return shape, params


def _decorated(page: sa.Select) -> sa.Select:
    """`page` (id, proto, created_at) as a CTE, each row with its tags and aliases aggregated
    into one string each (one row per version; tag keys, values and aliases never hold the
    control characters that separate them: checks.py refuses those)."""
    found = page.cte("found")
    tags = (sa.select(sa.func.aggregate_strings(
        version_tags.c.key + sa.literal(KEY_SEP) + version_tags.c.value, ENTRY_SEP))
        .where(version_tags.c.version_id == found.c.id).scalar_subquery())
    names = (sa.select(sa.func.aggregate_strings(aliases.c.alias, ENTRY_SEP))
             .where(aliases.c.version_id == found.c.id).scalar_subquery())
    return sa.select(found.c.id, found.c.proto, found.c.created_at, tags.label("tags"),
                     names.label("aliases"))


def ordered(rows: Iterable[sa.Row], *, descending: bool = False) -> list[sa.Row]:
    """Rows of a read statement in page order, (created_at, id)."""
    return sorted(rows, key=lambda r: (r.created_at, r.id), reverse=descending)


class RepeatedVersions(Protocol):
    """A message's repeated ModelVersion field."""

    def add(self) -> registry_pb2.ModelVersion: ...


def fill(rows: Iterable[sa.Row], into: RepeatedVersions) -> None:
    """Append the versions in `rows` to a response's repeated field, tags and aliases filled
    (parsed in place: no message is built twice)."""
    for row in rows:
        version = into.add()
        version.MergeFromString(row.proto)
        if row.tags:
            tags = version.tags
            for entry in row.tags.split(ENTRY_SEP):
                key, _, value = entry.partition(KEY_SEP)
                tags[key] = value
        if row.aliases:
            version.aliases.extend(sorted(row.aliases.split(ENTRY_SEP)))
