"""SIGTERM stops a service gracefully: in-flight jobs are marked INTERRUPTED, not lost."""
from __future__ import annotations

from lambdascope.local import LocalPlatform
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2


def test_sigterm_marks_running_jobs_and_keeps_them(tmp_path, regression_files):
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

    again = LocalPlatform(tmp_path / "data")
    with again, again.client() as client:
        kept = client.get_job(job.id)
        assert kept.state == jobs_pb2.JOB_STATE_INTERRUPTED
        assert "shut down" in kept.message
        assert kept.step > 0 and kept.finished_at.seconds > 0
        # the same request id still names the same job after the restart
        assert client.start_audit(version.id, dataset.id, config, "long-one").id == job.id
        # and the registry kept its records
        assert client.get_model_version(version.id).sha256 == version.sha256
