"""The worker side of a job: one process runs one job and reports on its stdout.

Protocol with lambdascope.jobs: the job ({"job_id", "kind", "spec_json"}, and "api_key": the job's
credential, bound to its team, with which it calls the registry) arrives as JSON in the
environment variable LAMBDASCOPE_JOB when it is set (a Kubernetes Job's pod, whose credential
comes apart, from a Secret, as LAMBDASCOPE_JOB_API_KEY), else on stdin (a local worker process); progress and the final result leave as JobEvent JSON lines on stdout. Anything else a
library prints goes to stderr (stdout is reserved). Exit codes tell failures apart, so a
scheduler (a local pool or a Kubernetes Job's podFailurePolicy) can react: 0 success,
EXIT_BAD_INPUT when the user's input cannot work, EXIT_INFRASTRUCTURE for anything else.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import IO

from google.protobuf import json_format

from lambdascope import config, cpu_share, logs
from lambdascope.config import Settings
from lambdascope.v1 import jobs_pb2

EXIT_OK = 0
EXIT_INFRASTRUCTURE = 1
EXIT_BAD_INPUT = 2
JOB_ENV = "LAMBDASCOPE_JOB"
CREDENTIAL_ENV = "LAMBDASCOPE_JOB_API_KEY"  # lambdascope.backends.CREDENTIAL_ENV

log = logging.getLogger("lambdascope.worker")


class BadInput(Exception):
    """The job cannot succeed with the input it was given; the message tells the user why."""


@dataclasses.dataclass
class JobContext:
    job_id: str
    kind: str
    spec_json: str
    settings: Settings
    _out: IO[str]
    # The job's credential (lambdascope.auth): the registry sees the worker as the job's team.
    api_key: str = ""
    # This worker's share of the machine's cores, resized as other workers start and end.
    cores: cpu_share.Share | None = None
    _last_emit: float = 0.0

    def progress(self, step: int, total: int, metrics: dict[str, float] | None = None,
                 message: str = "", *, force: bool = False) -> None:
        """Report progress; calls closer than 0.2 s apart are dropped, except the last step's
        and forced ones. Also where the worker's thread count follows its share of the cores."""
        if self.cores is not None:
            _set_threads(self.cores.threads())
        now = time.monotonic()
        if not force and step != total and now - self._last_emit < 0.2:
            return
        self._last_emit = now
        self._emit(jobs_pb2.JobEvent(job_id=self.job_id, state=jobs_pb2.JOB_STATE_RUNNING,
                                     step=step, total=total, metrics=metrics or {},
                                     message=message))

    def _emit(self, event: jobs_pb2.JobEvent) -> None:
        self._out.write(json_format.MessageToJson(event, indent=None) + "\n")
        self._out.flush()


@dataclasses.dataclass
class Result:
    output_ids: list[str]
    metrics: dict[str, float]
    message: str = ""
    step: int = 0
    total: int = 0


def read_job(environ: dict[str, str] | None = None, stdin: IO[str] | None = None) -> dict:
    """The job to run: LAMBDASCOPE_JOB (JSON) when set, with its credential from
    LAMBDASCOPE_JOB_API_KEY (a Kubernetes pod's, from the job's Secret), else the JSON on stdin."""
    environ = os.environ if environ is None else environ
    raw = environ.get(JOB_ENV) or (sys.stdin if stdin is None else stdin).read()
    job = json.loads(raw)
    if environ.get(JOB_ENV) and environ.get(CREDENTIAL_ENV):
        job["api_key"] = environ[CREDENTIAL_ENV]
    missing = {"job_id", "kind", "spec_json"} - set(job)
    if missing:
        raise ValueError(f"the job is missing {', '.join(sorted(missing))}")
    return job


def _die_with_parent() -> None:
    """A local worker ends with the service that started it (LAMBDASCOPE_PARENT_PID): a service
    killed with SIGKILL must not leave a worker running on, which would race the one its
    restarted self starts for the same job. Linux's parent-death signal; a Kubernetes Job's
    worker has no parent service and skips this."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the service died before the signal was armed
        os._exit(EXIT_INFRASTRUCTURE)


def _set_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


PARENT_ENV = "LAMBDASCOPE_PARENT_PID"
PR_SET_PDEATHSIG = 1


def main(service: str, run: Callable[[JobContext], Result]) -> None:
    """Entry point of a service's worker module: read the job, run it, report, exit."""
    _die_with_parent()
    settings = config.load(service)
    logs.configure(f"{service}-worker", settings.log_level)
    # Keep the protocol channel for ourselves; stray prints from libraries go to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_INFRASTRUCTURE))
    cores = cpu_share.Share(settings.worker_threads)
    _set_threads(cores.join())
    job = read_job()
    ctx = JobContext(job["job_id"], job["kind"], job["spec_json"], settings, out,
                     api_key=job.get("api_key", ""), cores=cores)
    final = jobs_pb2.JobEvent(job_id=ctx.job_id)
    try:
        result = run(ctx)
    except BadInput as exc:
        final.state, final.message = jobs_pb2.JOB_STATE_FAILED, str(exc)
        code = EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - reported to the user, logged in full
        log.exception("job failed", extra={"job_id": ctx.job_id})
        final.state = jobs_pb2.JOB_STATE_FAILED
        final.message = f"internal error: {type(exc).__name__}: {exc}"
        code = EXIT_INFRASTRUCTURE
    else:
        final.state = jobs_pb2.JOB_STATE_SUCCEEDED
        final.output_ids[:] = result.output_ids
        final.metrics.update(result.metrics)
        final.message, final.step, final.total = result.message, result.step, result.total
        code = EXIT_OK
    ctx._emit(final)
    out.close()
    sys.exit(code)
