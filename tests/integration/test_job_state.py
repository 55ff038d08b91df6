"""A job's own files, kept by the registry for its worker (services/registry/job_state.py): only
a job's credential reaches them, and only its own job's; the training run's resume state goes
through them; the collector removes those of jobs that ended without removing them."""
from __future__ import annotations

import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from lambdascope import auth
from lambdascope.local import LocalPlatform
from services.trainer import resume


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    running = LocalPlatform(tmp_path_factory.mktemp("jobstate"))
    running.start()
    with running.client() as admin:
        for team in ("team-a", "team-b"):
            admin.create_team(team)
        running.writers = {team: admin.create_key(team, auth.Role.ROLE_WRITER).secret
                           for team in ("team-a", "team-b")}
    yield running
    running.stop()


def job_client(platform, team: str, job_id: str):
    with platform.client(api_key=platform.writers[team]) as writer:
        credential = writer.issue_job_credential(job_id, 3600)
    return platform.client(api_key=credential), credential


def test_a_jobs_files_are_its_workers_alone(platform, tmp_path):
    source = tmp_path / "state.bin"
    source.write_bytes(b"chain positions" * 1000)
    mine, _ = job_client(platform, "team-a", "audit-1")
    other_job, _ = job_client(platform, "team-a", "audit-2")
    other_team, _ = job_client(platform, "team-b", "audit-1")  # same job id, another team
    with mine, other_job, other_team:
        assert mine.put_job_state("snapshot", source).size_bytes == source.stat().st_size
        got = mine.get_job_state("snapshot", tmp_path / "back.bin")
        assert got.read_bytes() == source.read_bytes()
        source.write_bytes(b"newer")
        mine.put_job_state("snapshot", source)  # replaced whole
        assert mine.get_job_state("snapshot", tmp_path / "again.bin").read_bytes() == b"newer"
        for stranger in (other_job, other_team):
            assert stranger.get_job_state("snapshot", tmp_path / "x.bin") is None
        assert mine.get_job_state("missing", tmp_path / "m.bin") is None
        with pytest.raises(grpc.RpcError) as bad:
            mine.put_job_state("../escape", source)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert other_team.delete_job_state() == 0  # removes nothing of team-a's job
        assert mine.get_job_state("snapshot", tmp_path / "still.bin") is not None
        assert mine.delete_job_state() == 1
        assert mine.get_job_state("snapshot", tmp_path / "gone.bin") is None
    with platform.client(api_key=platform.writers["team-a"]) as user:  # not a job's credential
        with pytest.raises(grpc.RpcError) as refused:
            user.put_job_state("snapshot", source)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_resume_state_round_trips_through_the_registry(platform, tmp_path):
    import torch

    from lambdascope.training.loop import TrainState

    state = TrainState(step=7, epoch=1, batch=3, module={"w": torch.arange(6.0).reshape(2, 3)},
                       optimizer={"state": {0: {"momentum": torch.ones(3)}}, "param_groups": []},
                       noise=None, epoch_generator=torch.ByteTensor([1, 2, 3]))
    client, _ = job_client(platform, "team-a", "train-1")
    with client:
        store = resume.ResumeStore(client)
        assert store.load_state() is None and store.load_job() == {}
        store.save_state(state, versions=["v0"])
        store.save_state(state, versions=["v1"])  # replaces the previous state
        loaded, versions = store.load_state()
        assert versions == ["v1"] and loaded.step == 7
        assert torch.equal(loaded.module["w"], state.module["w"])
        assert torch.equal(loaded.optimizer["state"][0]["momentum"], torch.ones(3))
        store.save_job({"train_data_id": "ds-1"})
        assert store.load_job() == {"train_data_id": "ds-1"}
        store.discard()
        assert store.load_state() is None and store.load_job() == {}


def test_the_collector_removes_the_files_of_jobs_that_ended(platform, tmp_path):
    source = tmp_path / "s.bin"
    source.write_bytes(b"x" * 100)
    ended, ended_key = job_client(platform, "team-a", "train-ended")
    running, _ = job_client(platform, "team-a", "train-running")
    with ended, running:
        ended.put_job_state("state", source)
        running.put_job_state("state", source)
        ended.revoke_key(auth.split_key(ended_key)[0])  # what the job service does at the end
    objects = platform.data_dir / "objects" / "jobstate" / "team-a"
    old = time.time() - 2 * 86400  # older than the staging TTL
    for path in objects.rglob("*"):
        if path.is_file():
            import os
            os.utime(path, (old, old))
    with platform.client() as admin:
        assert admin.collect_garbage(dry_run=True).job_files_removed == 1
        assert admin.collect_garbage().job_files_removed == 1
    assert not (objects / "train-ended").exists() or not any((objects / "train-ended").iterdir())
    assert (objects / "train-running" / "state").exists()


def _kill_registry(platform) -> None:
    """SIGKILL the registry: a crash, not a graceful stop."""
    proc = platform.procs.pop("registry")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_jobs_file_waits_out_a_registry_restart(platform, tmp_path):
    """A worker's snapshot is not lost to a registry restart: put_job_state streams again while
    the registry is down and lands once it is back; get_job_state reads again until it is."""
    source = tmp_path / "state.bin"
    source.write_bytes(b"chain positions" * 5000)
    worker, _ = job_client(platform, "team-a", "audit-restarted")
    try:
        with worker, ThreadPoolExecutor(1) as pool:
            _kill_registry(platform)
            pending = pool.submit(worker.put_job_state, "snapshot", source)
            time.sleep(1.0)
            assert not pending.done()  # still trying
            platform.restart("registry")
            assert pending.result(60).size_bytes == source.stat().st_size

            _kill_registry(platform)
            pending = pool.submit(worker.get_job_state, "snapshot", tmp_path / "back.bin")
            time.sleep(1.0)
            assert not pending.done()
            platform.restart("registry")
            assert pending.result(60).read_bytes() == source.read_bytes()
    finally:
        if "registry" not in platform.procs:
            platform.restart("registry")
