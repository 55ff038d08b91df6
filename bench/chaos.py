"""Faults and load together: no job lost, none stuck, nothing registered twice (not run by make test).

    .venv/bin/python bench/chaos.py                 # 16 clients x 3 operations, the full fault script
    .venv/bin/python bench/chaos.py --clients 4     # a smaller load, the same faults

The platform runs as `lambdascope up` runs it, but on PostgreSQL (a fresh database per service
on 127.0.0.1:5432) and S3 (moto's server, in this process so that its objects outlive an
outage, as a real S3's would). `--clients` threads each submit `--per-client` operations, in
turn an upload, an audit and a training run, each with its own request id; a client whose call
fails retries it (same request id; an upload first looks for its bytes under its name) until it
is accepted or two minutes pass. Meanwhile a script of faults runs:

    kill -9 of the estimator (restarted 1 s later), of a worker, of the trainer, of the
    registry (restarted 2 s later); the S3 server stopped for 15 s; PostgreSQL restarted

Then every job is followed to its end, the collector runs, and the platform is checked: jobs
lost (unknown to their service), stuck (not ended 10 minutes after the faults), duplicated
checkpoints or reports, uploads registered twice, stored objects no record references. It prints
one table and a last line `lost 0 stuck 0 duplicated 0 orphaned 0` when all of those hold.
Results are written down in docs/benchmarks.md §8.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import grpc  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from lambdascope import auth  # noqa: E402
from lambdascope.local import LocalPlatform  # noqa: E402
from lambdascope.v1 import audit_pb2, jobs_pb2, models_pb2, trainer_pb2  # noqa: E402
import regression_data  # noqa: E402
from platform_probes import worker_pids  # noqa: E402
from registry_backend import postgres_database  # noqa: E402
from s3server import RestartableS3  # noqa: E402

TERMINAL = {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED}
SERVICES = ("registry", "trainer", "estimator")


class Run:
    """What the clients submitted and what happened to it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, str] = {}  # job id -> kind
        self.uploads: list[tuple[str, str]] = []  # (model name, sha256)
        self.refused: list[str] = []  # operations never accepted, with why
        self.faults: list[str] = []
        self.peak_rss: dict[str, int] = {s: 0 for s in SERVICES}


def artifacts(out: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, list[pathlib.Path]]:
    """A regression dataset, an exported MLP trained on it, and small weight files to upload."""
    program, data = regression_data.write(out, steps=800)
    weights = []
    for i in range(8):
        path = out / f"weights-{i}.safetensors"
        save_file({"layers.0.weight": torch.randn(16, 64), "layers.0.bias": torch.randn(16),
                   "layers.1.weight": torch.randn(10, 16), "layers.1.bias": torch.randn(10)}, str(path))
        weights.append(path)
    return data, program, weights


def retried(what: str, call, run: Run, give_up_after: float = 120.0):
    """`call()` until it is accepted; the SDK already retries briefly, this outlasts outages."""
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL) \
                    or time.monotonic() > deadline:
                with run.lock:
                    run.refused.append(f"{what}: {exc.code().name} {exc.details()}")
                return None
            time.sleep(1.0 + random.random())


def client_thread(index: int, per_client: int, platform: LocalPlatform, key: str, run: Run,
                  inputs: dict) -> None:
    arch = models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[64, 16, 10]))
    with platform.client(api_key=key, timeout=30) as client:
        for k in range(per_client):
            kind = ("upload", "audit", "train")[(index + k) % 3]
            request_id = f"chaos-{index}-{k}"
            if kind == "upload":
                path, name = inputs["weights"][(index + k) % len(inputs["weights"])], f"up-{index}-{k}"

                def upload():
                    found = client.find_model_version(path, name, architecture=arch)
                    return found or client.upload_model(path, name, architecture=arch)
                version = retried(f"upload {name}", upload, run)
                if version is not None:
                    with run.lock:
                        run.uploads.append((name, version.sha256))
            elif kind == "audit":
                config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_MSE)
                config.sampler.chains, config.sampler.draws, config.sampler.burnin = 2, 3000, 300
                config.sampler.step_size, config.sampler.seed = 1e-4, index
                job = retried(f"audit {request_id}", lambda: client.start_audit(
                    inputs["version"], inputs["dataset"], config, request_id=request_id), run)
                if job is not None:
                    with run.lock:
                        run.jobs[job.id] = "audit"
            else:
                spec = trainer_pb2.TrainSpec(
                    model_name=f"trained-{index}-{k}", loss=models_pb2.LOSS_KIND_CROSS_ENTROPY,
                    epochs=0, steps=1500, batch_size=64, seed=index, architecture=arch,
                    dataset=trainer_pb2.DatasetSpec(builtin="digits", test_fraction=0.2),
                    optimizer=trainer_pb2.OptimizerSpec(kind="adam", learning_rate=3e-3),
                    checkpoints=trainer_pb2.CheckpointPolicy(steps=[300, 900]))
                job = retried(f"train {request_id}", lambda: client.start_training(
                    spec, request_id=request_id), run)
                if job is not None:
                    with run.lock:
                        run.jobs[job.id] = "train"


def kill_service(platform: LocalPlatform, name: str, down: float) -> None:
    proc = platform.procs[name]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    time.sleep(down)
    platform.restart(name)


def faults(platform: LocalPlatform, s3: RestartableS3, run: Run, started: float) -> None:
    """The fault script, at fixed times from the start of the load."""
    def at(seconds: float) -> None:
        time.sleep(max(0.0, started + seconds - time.monotonic()))

    def note(text: str) -> None:
        with run.lock:
            run.faults.append(f"{time.monotonic() - started:6.1f} s  {text}")

    at(8)
    note("kill -9 estimator (restarted after 1 s)")
    kill_service(platform, "estimator", 1.0)
    at(20)
    pids = [pid for module in ("services.estimator.worker", "services.trainer.worker")
            for pid in worker_pids(platform.data_dir, module)]
    if pids:
        victim = random.Random(0).choice(pids)
        os.kill(victim, signal.SIGKILL)
        note(f"kill -9 a worker (pid {victim})")
    at(30)
    note("kill -9 trainer (restarted after 1 s)")
    kill_service(platform, "trainer", 1.0)
    at(42)
    note("kill -9 registry (restarted after 2 s)")
    kill_service(platform, "registry", 2.0)
    at(55)
    note("S3 stopped for 15 s")
    s3.stop()
    time.sleep(15)
    s3.start()
    at(80)
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    done = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                          capture_output=True, text=True, timeout=120)
    note("PostgreSQL restarted" if done.returncode == 0 else
         f"PostgreSQL restart failed ({done.stderr.strip()[:80]})")


def sample_memory(platform: LocalPlatform, run: Run, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        for name, proc in list(platform.procs.items()):
            try:
                text = pathlib.Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            rss = next((int(line.split()[1]) * 1024 for line in text.splitlines()
                        if line.startswith("VmRSS:")), 0)  # none: the process is exiting
            run.peak_rss[name] = max(run.peak_rss[name], rss)


def follow(platform: LocalPlatform, key: str, run: Run, timeout: float) -> dict[str, jobs_pb2.Job | None]:
    """Each job's final record (None: its service does not know it any more)."""
    finals: dict[str, jobs_pb2.Job | None] = {}
    deadline = time.monotonic() + timeout
    with platform.client(api_key=key, timeout=30) as client:
        pending = dict(run.jobs)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                try:
                    job = client.get_job(job_id)
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        finals[job_id] = None
                        pending.pop(job_id)
                    continue
                finals[job_id] = job
                if job.state in TERMINAL:
                    pending.pop(job_id)
            time.sleep(2)
    return finals


def check(platform: LocalPlatform, key: str, run: Run, finals: dict, registry_db: str) -> dict:
    out: dict = {"faults injected": len(run.faults), "uploads accepted": len(run.uploads),
                 "operations refused": len(run.refused)}
    kinds = run.jobs
    out["jobs submitted"] = len(kinds)
    out["succeeded"] = sum(1 for j in finals.values() if j and j.state == jobs_pb2.JOB_STATE_SUCCEEDED)
    failed = [j for j in finals.values() if j and j.state == jobs_pb2.JOB_STATE_FAILED]
    out["failed (with a reason)"] = sum(1 for j in failed if j.message)
    out["failed without a reason"] = sum(1 for j in failed if not j.message)
    out["lost"] = sum(1 for j in finals.values() if j is None) + len(set(kinds) - set(finals))
    out["stuck"] = sum(1 for j in finals.values() if j and j.state not in TERMINAL)
    engine = sa.create_engine(registry_db, pool_pre_ping=True)
    with engine.connect() as conn:
        by_step = conn.exec_driver_sql(
            "SELECT job_id, count(*) FROM model_versions WHERE job_id != '' GROUP BY job_id").all()
        reports = conn.exec_driver_sql(
            "SELECT proto FROM reports").scalars().all()
        uploads = conn.execute(sa.text(
            "SELECT model_name, count(*) FROM model_versions WHERE model_name LIKE :uploaded "
            "GROUP BY model_name"), {"uploaded": "%/up-%"}).all()
        referenced = set(conn.exec_driver_sql(
            "SELECT sha256 FROM model_versions UNION SELECT sha256 FROM datasets").scalars())
    engine.dispose()
    from lambdascope.v1 import audit_pb2 as a

    seen_reports: dict[tuple[str, str], int] = {}
    for blob in reports:
        report = a.AuditReport.FromString(blob)
        seen_reports[(report.job_id, report.model_version_id)] = \
            seen_reports.get((report.job_id, report.model_version_id), 0) + 1
    trained = {job_id for job_id, kind in kinds.items() if kind == "train"}
    duplicated = sum(1 for job_id, count in by_step if job_id in trained and count > 3)
    duplicated += sum(1 for count in seen_reports.values() if count > 1)
    duplicated += sum(1 for _, count in uploads if count > 1)
    out["duplicated versions or reports"] = duplicated
    with platform.client(timeout=60) as admin:
        admin.collect_garbage()
    from lambdascope.config import load

    saved = dict(os.environ)
    os.environ.update(platform.extra_env)
    try:
        from lambdascope.storage.objects import open_store
        store = open_store(load("registry"))
        stored = {info.key.rsplit("/", 1)[-1] for info in store.list("sha256/")}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out["orphaned objects after GC"] = len(stored - referenced)
    out["lost/stuck detail"] = [f"{j.id}: {jobs_pb2.JobState.Name(j.state)} {j.message[:80]}"
                                for j in finals.values() if j and j.state not in TERMINAL]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=3)
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    run = Run()
    with contextlib.ExitStack() as stack:
        urls = {s: stack.enter_context(postgres_database()) for s in SERVICES}
        s3 = RestartableS3()
        stack.callback(s3.stop)
        tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        data, program, weights = artifacts(tmp)
        env = {"LAMBDASCOPE_OBJECT_STORE": f"s3://chaos-{uuid.uuid4().hex[:8]}/artifacts",
               "LAMBDASCOPE_S3_ENDPOINT": s3.endpoint, "LAMBDASCOPE_S3_ACCESS_KEY": "chaos",
               "LAMBDASCOPE_S3_SECRET_KEY": "chaos-secret", "LAMBDASCOPE_S3_SECURE": "false",
               "LAMBDASCOPE_S3_REGION": "us-east-1", "LAMBDASCOPE_RETRY_BACKOFF_SECONDS": "1",
               "LAMBDASCOPE_JOB_BACKOFF_LIMIT": "8", "LAMBDASCOPE_AUDIT_SNAPSHOT_SECONDS": "2",
               "LAMBDASCOPE_HEALTH_INTERVAL_SECONDS": "1", "LAMBDASCOPE_MAX_QUEUED_JOBS": "500",
               "LAMBDASCOPE_STAGING_TTL_SECONDS": "1", "LAMBDASCOPE_GC_INTERVAL_SECONDS": "0"}
        platform = LocalPlatform(tmp / "data", extra_env=env,
                                 service_env={s: {"LAMBDASCOPE_DATABASE_URL": u} for s, u in urls.items()})
        platform.start()
        stack.callback(platform.stop)
        with platform.client() as admin:
            admin.create_team("chaos")
            key = admin.create_key("chaos", auth.Role.ROLE_WRITER, user="chaos-bench").secret
        with platform.client(api_key=key) as client:
            inputs = {"version": client.upload_model(program, "audited").id,
                      "dataset": client.upload_dataset(data, "audited-data").id, "weights": weights}
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(platform, run, stop), daemon=True)
        sampler.start()
        started = time.monotonic()
        clients = [threading.Thread(target=client_thread, args=(i, args.per_client, platform, key, run, inputs))
                   for i in range(args.clients)]
        script = threading.Thread(target=faults, args=(platform, s3, run, started))
        for thread in [script, *clients]:
            thread.start()
        for thread in [script, *clients]:
            thread.join()
        finals = follow(platform, key, run, timeout=600)
        stop.set()
        result = check(platform, key, run, finals, urls["registry"])
    print("faults:")
    for line in run.faults:
        print("  " + line)
    if run.refused:
        print("operations never accepted:")
        for line in run.refused:
            print("  " + line)
    detail = result.pop("lost/stuck detail")
    print(f"{'':<34}{'':>6}")
    for name, value in result.items():
        print(f"{name:<34}{value:>6}")
    for name, rss in run.peak_rss.items():
        print(f"{'peak RSS ' + name + ' (MiB)':<34}{rss / 2**20:>6.0f}")
    for line in detail:
        print("  " + line)
    print(f"lost {result['lost']} stuck {result['stuck']} "
          f"duplicated {result['duplicated versions or reports']} "
          f"orphaned {result['orphaned objects after GC']}")
    ok = not (result["lost"] or result["stuck"] or result["duplicated versions or reports"]
              or result["orphaned objects after GC"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
