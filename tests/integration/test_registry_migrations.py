"""Registry migrations on SQLite and PostgreSQL: a fresh database and one created by the first
release both end up with exactly the schema the code queries, with old records kept."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from lambdascope import errors
from lambdascope.storage import db
from lambdascope.v1 import registry_pb2
from registry_backend import postgres_database
from services.registry.migrate import MIGRATIONS, migrate
from services.registry.schema import metadata
from services.registry.store import RegistryStore


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        with postgres_database() as pg:
            yield pg


def drift(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def test_a_fresh_database_gets_exactly_the_schema_the_code_uses(url):
    engine = db.engine(url)
    migrate(engine)
    migrate(engine)  # idempotent
    assert drift(engine) == []
    engine.dispose()


def test_a_first_release_database_is_upgraded_with_its_records(url):
    """The first release created its four tables with create_all and no alembic_version."""
    engine = db.engine(url)
    old = sa.MetaData()
    models = sa.Table("models", old, sa.Column("name", sa.String(200), primary_key=True),
                      sa.Column("description", sa.Text, nullable=False),
                      sa.Column("created_at", sa.Float, nullable=False))
    versions = sa.Table(
        "model_versions", old, sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(200), sa.ForeignKey("models.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("proto", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("model_name", "version"))
    datasets = sa.Table(
        "datasets", old, sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("proto", sa.LargeBinary, nullable=False))
    sa.Table("reports", old, sa.Column("id", sa.String(64), primary_key=True),
             sa.Column("model_version_id", sa.String(64), sa.ForeignKey("model_versions.id"),
                       nullable=False, index=True),
             sa.Column("created_at", sa.Float, nullable=False),
             sa.Column("proto", sa.LargeBinary, nullable=False))
    old.create_all(engine)
    now = time.time()
    parent = registry_pb2.ModelVersion(id="mv-old1", model_name="legacy", version=1,
                                       sha256="a" * 64, size_bytes=10)
    child = registry_pb2.ModelVersion(
        id="mv-old2", model_name="legacy", version=2, sha256="b" * 64, size_bytes=20,
        lineage=registry_pb2.Lineage(parent_version_id="mv-old1", dataset_version_id="ds-old2"))
    with engine.begin() as conn:
        conn.execute(models.insert().values(name="legacy", description="", created_at=now))
        for v in (parent, child):
            conn.execute(versions.insert().values(id=v.id, model_name=v.model_name,
                                                  version=v.version, job_id="", sha256=v.sha256,
                                                  created_at=now, proto=v.SerializeToString()))
        for i, name in enumerate(["ds-old1", "ds-old2"]):
            d = registry_pb2.Dataset(id=name, name="train", sha256="c" * 63 + str(i),
                                     size_bytes=5)
            conn.execute(datasets.insert().values(id=name, name="train", sha256=d.sha256,
                                                  created_at=now + i,
                                                  proto=d.SerializeToString()))
    engine.dispose()

    store = RegistryStore(url)
    assert drift(store.engine) == []
    # Records from before teams belong to the default team, under the names they had.
    assert store.get_version("legacy/latest", "default").id == "mv-old2"
    assert store.get_model("legacy", "default").name == "legacy"
    found = list(store.search_versions(registry_pb2.SearchModelVersionsRequest(), "default",
                                       parent_version_id="mv-old1").versions)
    assert [v.id for v in found] == ["mv-old2"]
    assert [store.get_dataset(d, "default").version for d in ("ds-old1", "ds-old2")] == [1, 2]
    assert [d.name for d in store.list_datasets(
        registry_pb2.ListDatasetsRequest(name="train"), "default").datasets] == ["train", "train"]
    with pytest.raises(errors.NotFound):
        store.get_version("mv-old1", "another-team")
    assert store.known_object("a" * 64) and store.known_object("c" * 63 + "1")
    store.dispose()


def test_tags_written_before_revision_0003_are_found_in_order_after_it(url):
    """0003 gives tag rows their version's creation time (a tag search walks that index):
    rows written by the previous schema are backfilled, not left at the column's default."""
    engine = db.engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    now = time.time()
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO models (name, description, created_at, owner) "
                             f"VALUES ('tagged', '', {now}, 'team')")
        for i in range(5):
            v = registry_pb2.ModelVersion(id=f"mv-tagged{i}", model_name="tagged", version=i + 1,
                                          sha256="d" * 64, size_bytes=1)
            conn.execute(sa.text(
                "INSERT INTO model_versions (id, model_name, version, job_id, sha256, created_at, "
                "proto, parent_version_id, dataset_version_id, owner) VALUES "
                "(:id, 'tagged', :n, '', :sha, :t, :proto, '', '', 'team')"),
                {"id": v.id, "n": i + 1, "sha": v.sha256, "t": now - 100 + (5 - i) * 10 if i % 2
                 else now - 100 + i, "proto": v.SerializeToString()})
            conn.execute(sa.text("INSERT INTO version_tags (version_id, key, value) "
                                 "VALUES (:id, 'stage', 'old')"), {"id": v.id})
    engine.dispose()

    store = RegistryStore(url)
    assert drift(store.engine) == []
    with store.engine.connect() as conn:
        stamped = dict(conn.exec_driver_sql(
            "SELECT t.version_id, t.created_at = v.created_at FROM version_tags t "
            "JOIN model_versions v ON v.id = t.version_id").all())
    assert stamped == {f"mv-tagged{i}": True for i in range(5)}
    request = registry_pb2.SearchModelVersionsRequest(tags={"stage": "old"}, page_size=2)
    found, token = [], None
    while token != "":
        page = store.search_versions(request, "team", tags={"stage": "old"})
        found += [v.id for v in page.versions]
        token = request.page_token = page.next_page_token
    assert found == ["mv-tagged0", "mv-tagged2", "mv-tagged4", "mv-tagged3", "mv-tagged1"]
    store.dispose()


def test_a_registry_on_the_previous_schema_cannot_write_tags_without_their_time(url):
    """During a rolling update an old registry inserts tag rows without created_at: the
    insert fails (and its upload with it) rather than storing rows a tag search misorders."""
    engine = db.engine(url)
    migrate(engine)
    now = time.time()
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO models (name, description, created_at, owner) "
                             f"VALUES ('rolling', '', {now}, 'team')")
        conn.execute(sa.text(
            "INSERT INTO model_versions (id, model_name, version, job_id, sha256, created_at, "
            "proto, parent_version_id, dataset_version_id, owner) VALUES "
            "('mv-rolling', 'rolling', 1, '', :sha, :t, :proto, '', '', 'team')"),
            {"sha": "f" * 64, "t": now, "proto": b""})
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO version_tags (version_id, key, value) "
                             "VALUES ('mv-rolling', 'stage', 'x')")
    engine.dispose()
