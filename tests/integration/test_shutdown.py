"""SIGTERM stops a service gracefully: in-flight jobs are marked INTERRUPTED, not lost, and
continue when the service starts again."""
from __future__ import annotations

from lambdascope.local import LocalPlatform
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2


def test_sigterm_marks_running_jobs_and_keeps_them(tmp_path, regression_files):
    import sqlite3

    model_path, data_path = regression_files
    platform = LocalPlatform(tmp_path / "data")
    platform.start()
    try:
        with platform.client() as client:
            version = client.upload_model(model_path, "regressor")
            dataset = client.upload_dataset(data_path, "regression")
            config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE)
            config.sampler.draws, config.sampler.step_size = 500_000, 1e-4
            job = client.start_audit(version.id, dataset.id, config, request_id="long-one")
            for event in client.watch(job.id):
                if event.state == jobs_pb2.JOB_STATE_RUNNING and event.step > 0:
                    break
    finally:
        codes = platform.stop()
    assert codes == {"registry": 0, "trainer": 0, "estimator": 0}
    with sqlite3.connect(tmp_path / "data" / "estimator.db") as db:  # as the stop left it
        state, message, step = db.execute("SELECT state, message, step FROM jobs WHERE id = ?",
                                          (job.id,)).fetchone()
    assert state == jobs_pb2.JOB_STATE_INTERRUPTED and "shut down" in message and step > 0

    again = LocalPlatform(tmp_path / "data")
    with again, again.client() as client:
        kept = client.get_job(job.id)  # audits resume (from their last snapshot): queued again
        assert kept.state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING), kept
        assert "continues from its last saved state" in kept.message or kept.step > 0, kept
        # the same request id still names the same job after the restart
        assert client.start_audit(version.id, dataset.id, config, "long-one").id == job.id
        # and the registry kept its records
        assert client.get_model_version(version.id).sha256 == version.sha256
        assert client.cancel_job(job.id).state in (jobs_pb2.JOB_STATE_CANCELLED,
                                                   jobs_pb2.JOB_STATE_RUNNING)
