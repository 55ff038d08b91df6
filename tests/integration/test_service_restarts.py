"""kill -9 of each service mid-job, then a restart: every job ends SUCCEEDED (or FAILED with a
reason), none stays RUNNING without a worker, no worker of the killed service runs on beside
the new one, and nothing is registered twice."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from lambdascope.local import LocalPlatform
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2
from tests.platform_probes import total, worker_pids
from tests.integration.test_training_flow import digits_spec

TERMINAL = {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED}
ENV = {"LAMBDASCOPE_AUDIT_SNAPSHOT_SECONDS": "0", "LAMBDASCOPE_RETRY_BACKOFF_SECONDS": "0.5"}


def audit_config() -> audit_pb2.AuditConfig:
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE)  # run until trusted ...
    config.sampler.seed, config.sampler.chains, config.sampler.chains_per_pass = 11, 2, 2
    config.sampler.until_ess, config.sampler.max_mcse = 60, 0.05  # ... by looser targets
    # γ given: these tests are about restarts, and at the curvature-set γ (3) this small tanh MLP
    # samples 68,657 steps (50 s) where at 10 it converges in 5,651
    config.sampler.localization = 10
    # eager throughout, so a resumed estimate equals the uninterrupted one bitwise: when a run
    # compiles depends on the machine's speed (lambdascope.llc.snapshots)
    config.sampler.compile_gradients = False
    return config


def kill(platform: LocalPlatform, name: str) -> None:
    proc = platform.procs[name]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def wait_for(condition, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def files(regression_files):
    return regression_files


def test_the_estimator_killed_mid_audit_resumes_it_after_its_restart(tmp_path, files):
    model_path, data_path = files
    data_dir = (tmp_path / "data").resolve()
    with LocalPlatform(data_dir, extra_env=ENV) as platform, platform.client() as client:
        version = client.upload_model(model_path, "m")
        dataset = client.upload_dataset(data_path, "d")
        whole = client.wait(client.start_audit(version.id, dataset.id, audit_config()).id)
        job = client.start_audit(version.id, dataset.id, audit_config())
        # A watcher started before the kill follows the job through the restart (the SDK
        # reconnects) to its end.
        seen: list = []
        watcher = threading.Thread(target=lambda: seen.extend(client.watch(job.id)), daemon=True)
        watcher.start()
        wait_for(lambda: client.get_job(job.id).step > 0 and worker_pids(data_dir, "services.estimator.worker"),
                 "the audit never ran")
        time.sleep(1.0)  # into the main run
        assert client.get_job(job.id).state == jobs_pb2.JOB_STATE_RUNNING  # the kill lands mid-audit
        kill(platform, "estimator")
        # the killed service's worker dies with it (no orphan racing the restarted one)
        wait_for(lambda: not worker_pids(data_dir, "services.estimator.worker"), "an orphaned worker", 10)
        platform.restart("estimator")
        done = client.wait(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
        assert done.attempts == 2, done  # resumed by the restarted service, not finished before the kill
        assert len(done.output_ids) == 1
        watcher.join(60)
        assert not watcher.is_alive() and seen[-1].state == jobs_pb2.JOB_STATE_SUCCEEDED, seen[-3:]
        ours, theirs = client.get_report(done.output_ids[0]), client.get_report(whole.output_ids[0])
        assert ours.llc.mean == pytest.approx(theirs.llc.mean, rel=1e-9)
        assert [r.job_id for r in client.list_reports(version.id)].count(job.id) == 1


def test_the_trainer_killed_mid_run_continues_from_its_checkpoint(tmp_path):
    spec = digits_spec("killed", epochs=0, steps=4000)
    spec.checkpoints.count = 0
    spec.checkpoints.steps[:] = [300, 1500]
    data_dir = (tmp_path / "data").resolve()
    with LocalPlatform(data_dir, extra_env=ENV) as platform, platform.client() as client:
        job = client.start_training(spec)
        wait_for(lambda: client.get_job(job.id).step > 1600, "training never passed step 1600")
        kill(platform, "trainer")
        wait_for(lambda: not worker_pids(data_dir, "services.trainer.worker"), "an orphaned worker", 10)
        platform.restart("trainer")
        done = client.wait(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.message
        steps = [client.get_model_version(v).lineage.step for v in done.output_ids]
        assert steps == [300, 1500, 4000]
        assert len(list(client.list_model_versions("killed", job_id=job.id))) == 3  # none twice


def test_the_registry_killed_mid_audit_leaves_no_job_running_without_a_worker(tmp_path, files):
    model_path, data_path = files
    data_dir = (tmp_path / "data").resolve()
    with LocalPlatform(data_dir, extra_env={**ENV, "LAMBDASCOPE_JOB_BACKOFF_LIMIT": "3"}) as platform, \
            platform.client() as client:
        version = client.upload_model(model_path, "m")
        dataset = client.upload_dataset(data_path, "d")
        job = client.start_audit(version.id, dataset.id, audit_config())
        wait_for(lambda: client.get_job(job.id).step > 0, "the audit never ran")
        kill(platform, "registry")
        # A read made while the registry is down is answered once it is back (the SDK retries
        # UNAVAILABLE until the call's deadline), not refused.
        answer: dict = {}
        reader = threading.Thread(target=lambda: answer.update(
            version=client.get_model_version(version.id)), daemon=True)
        reader.start()
        time.sleep(4.0)  # the worker's snapshots and the final report cannot reach it meanwhile
        assert reader.is_alive(), "the read gave up while the registry was down"
        platform.restart("registry")
        reader.join(60)
        assert answer.get("version") is not None and answer["version"].id == version.id
        done = client.wait(job.id)
        assert done.state in TERMINAL, done
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED or done.message, done
        if done.state == jobs_pb2.JOB_STATE_SUCCEEDED:
            assert [r.job_id for r in client.list_reports(version.id)].count(job.id) == 1
        assert not worker_pids(data_dir, "services.estimator.worker")
        running = list(client.list_jobs("audit", state=jobs_pb2.JOB_STATE_RUNNING))
        assert running == []




def test_a_watch_the_client_cancels_ends_on_the_server(tmp_path, files):
    """The server honours a client's cancellation: the Watch stream's handler ends (counted as
    CANCELLED) instead of following the job for nobody."""
    model_path, data_path = files
    with LocalPlatform((tmp_path / "data").resolve(), extra_env=ENV) as platform, \
            platform.client() as client:
        version = client.upload_model(model_path, "m")
        dataset = client.upload_dataset(data_path, "d")
        config = audit_config()
        config.sampler.draws, config.sampler.step_size = 1_000_000, 1e-4  # long enough
        job = client.start_audit(version.id, dataset.id, config)
        stream = client.jobs_stub(job.id).WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id))
        next(stream)  # the stream is open: the server follows the job for us
        stream.cancel()

        def cancelled() -> float:
            return total(platform.metrics["estimator"], "grpc_server_handled_total",
                         grpc_method="WatchJob", grpc_code="CANCELLED")
        wait_for(lambda: cancelled() >= 1, "the server kept serving a cancelled Watch", 30)
        assert client.get_job(job.id).state == jobs_pb2.JOB_STATE_RUNNING  # the job itself goes on
        client.cancel_job(job.id)
