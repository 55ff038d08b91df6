"""What the audit trail writes of a call: the ids and names a request names (an upload's from
its header), the id the answer created, and never a key's secret, tags or specs."""
from __future__ import annotations

import sqlalchemy as sa

from lambdascope import audit_log
from lambdascope.v1 import estimator_pb2, identity_pb2, platform_pb2, registry_pb2


def test_describe_names_ids_and_names_only():
    upload = registry_pb2.UploadModelVersionRequest(header=registry_pb2.ModelUploadHeader(
        model_name="mlp", tags={"secret-ish": "no"}, sha256="a" * 64))
    assert audit_log.describe(upload) == "model_name=mlp"
    audit = estimator_pb2.StartAuditRequest(model_version_ids=["mv-1", "mv-2"], dataset_id="ds-1",
                                            request_id="r1")
    assert audit_log.describe(audit) == "dataset_id=ds-1, model_version_ids=mv-1,mv-2"
    assert audit_log.describe(iter([])) == ""


def test_result_id_is_the_created_record_and_never_a_secret():
    created = identity_pb2.CreatedKey(key=identity_pb2.ApiKey(id="0123456789abcdef"),
                                      secret="lsk_0123456789abcdef_" + "s" * 43)
    assert audit_log.result_id(created) == "0123456789abcdef"
    assert audit_log.result_id(registry_pb2.ModelVersion(id="mv-9")) == "mv-9"
    assert audit_log.result_id(None) == ""


def test_events_page_newest_first_and_filter(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'trail.db'}")
    trail = audit_log.AuditLog(engine, "trainer", retention_days=365)
    for i in range(5):
        trail.record(rpc=f"X/Write{i}", key_id="k", team="a" if i % 2 else "b", object="",
                     code="OK" if i < 4 else "PERMISSION_DENIED", reason="" if i < 4 else "role")
    first = trail.list(platform_pb2.ListAuditEventsRequest(page_size=2))
    assert [e.rpc for e in first.events] == ["X/Write4", "X/Write3"]
    rest = trail.list(platform_pb2.ListAuditEventsRequest(page_size=2, page_token=first.next_page_token))
    assert [e.rpc for e in rest.events] == ["X/Write2", "X/Write1"]
    assert [e.rpc for e in trail.list(platform_pb2.ListAuditEventsRequest(team="a")).events] == \
        ["X/Write3", "X/Write1"]
    assert [e.reason for e in trail.list(platform_pb2.ListAuditEventsRequest(denied_only=True)).events] == ["role"]


def test_old_events_are_dropped_after_the_retention(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'trail.db'}")
    trail = audit_log.AuditLog(engine, "trainer", retention_days=1)
    trail.record(rpc="X/Old", key_id="", team="", object="", code="OK")
    with engine.begin() as conn:
        conn.execute(trail.table.update().values(at=0.0))
    trail._pruned_at = 0.0  # as if the last pruning was long ago
    trail.record(rpc="X/New", key_id="", team="", object="", code="OK")
    assert [e.rpc for e in trail.list(platform_pb2.ListAuditEventsRequest()).events] == ["X/New"]
