"""Job bookkeeping shared by the job-running services (trainer, estimator).

A job is a row in the service's SQL database; it survives restarts. Starting is idempotent on
the client's request id. Each job runs in a worker that an execution backend starts
(lambdascope.backends: a local process from `python -m <worker_module>`, never forked from the
gRPC server, or a Kubernetes Job); the worker reports JobEvent JSON lines (see
lambdascope.worker). At most `max_concurrent_jobs` run at once; the rest queue. Per-team quotas
(lambdascope.quotas) bound how many of a team's jobs run at once (the others wait, deferred,
while other teams' jobs start) and how many it keeps waiting.
"""
from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from concurrent import futures

import sqlalchemy as sa

from lambdascope import auth, backends, errors, job_kinds, paging, quotas, specs, tls
from lambdascope.config import Settings
from lambdascope.metrics import JobMetrics
from lambdascope.v1 import jobs_pb2

log = logging.getLogger("lambdascope.jobs")

State = jobs_pb2.JobState
TERMINAL = {State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED, State.JOB_STATE_CANCELLED,
            State.JOB_STATE_INTERRUPTED}

_metadata = sa.MetaData()
jobs_table = sa.Table(
    "jobs", _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False, unique=True),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("state", sa.Integer, nullable=False, index=True),
    sa.Column("step", sa.BigInteger, nullable=False, default=0),
    sa.Column("total", sa.BigInteger, nullable=False, default=0),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("metrics_json", sa.Text, nullable=False, default="{}"),
    sa.Column("output_ids_json", sa.Text, nullable=False, default="[]"),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),
    # The team that started the job: the only one that sees it.
    sa.Column("team", sa.String(100), nullable=False, default="", server_default="", index=True),
    # The job's registry credential (lambdascope.auth), issued for the job's team when it is
    # created and handed to each attempt's worker; cleared (and revoked) once the job ends.
    sa.Column("credential", sa.Text, nullable=False, default="", server_default=""),
)
# Stored request ids are "<team>/<request id>": a request id is idempotent within its team,
# and one team's ids say nothing about another's.
_REQUEST_SEP = "/"
MAX_RETRY_SECONDS = 60.0
# How often queued jobs are checked for one no runner holds (after a database outage).
RECONCILE_SECONDS = 10.0


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added after a service's jobs table was created (create_all adds tables only)."""
    present = {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    with engine.begin() as conn:
        if "attempts" not in present:
            conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"))
        if "team" not in present:
            conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN team VARCHAR(100) NOT NULL DEFAULT ''"))
            conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_jobs_team ON jobs (team)"))
        if "credential" not in present:
            conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN credential TEXT NOT NULL DEFAULT ''"))


def _to_job(row: sa.Row) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        id=row.id, kind=row.kind, state=row.state, request_id=row.request_id.split(_REQUEST_SEP, 1)[-1], step=row.step,
        total=row.total, message=row.message, metrics=json.loads(row.metrics_json),
        output_ids=json.loads(row.output_ids_json), created_at=specs.timestamp(row.created_at),
        started_at=specs.timestamp(row.started_at), finished_at=specs.timestamp(row.finished_at),
        spec_json=row.spec_json, attempts=row.attempts,
    )


def event_of(job: jobs_pb2.Job) -> jobs_pb2.JobEvent:
    event = jobs_pb2.JobEvent(job_id=job.id, state=job.state, step=job.step, total=job.total,
                              metrics=job.metrics, message=job.message, output_ids=job.output_ids)
    event.time.GetCurrentTime()
    return event


class JobManager:
    def __init__(self, *, kind: str, engine: sa.Engine, settings: Settings,
                 worker_module: str | None = None,
                 resumable: bool = False, metrics: JobMetrics | None = None,
                 backend: backends.Backend | None = None):
        """resumable: the workers save their progress and continue from it, so jobs that a
        stop or crash interrupted are queued again when the service starts. metrics: where
        job counts, durations and worker progress are exported (lambdascope.metrics).
        backend: where workers run; default: the one settings.job_backend names.
        worker_module: what a worker runs; default: the kind's (lambdascope.job_kinds)."""
        self.kind = kind
        self.metrics = metrics
        self.resumable = resumable
        self.engine = engine
        self.worker_module = worker_module or job_kinds.worker_module(kind)
        self.settings = settings
        self.backend = backend if backend is not None else backends.from_settings(
            settings, kind=kind, worker_module=self.worker_module)
        _metadata.create_all(engine)
        _add_missing_columns(engine)
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._executions: dict[str, backends.Execution] = {}
        self._cancelling: set[str] = set()
        self._subscribers: dict[str, list[queue.Queue]] = {}
        self._closing = False
        self.quotas = quotas.Quotas(settings)
        # Jobs of a team at its running quota, in order: each end of one of its jobs starts the
        # next. Claims and deferrals happen under _gate, after the ending job's state is
        # written, so no deferred job is forgotten.
        self._gate = threading.Lock()
        self._deferred: dict[str, collections.deque[str]] = {}
        self._handed: set[str] = set()  # jobs a pool runner holds (queued in the pool or running)
        self._reconciling = threading.Event()
        self._pool = futures.ThreadPoolExecutor(max(1, settings.max_concurrent_jobs),
                                                thread_name_prefix=f"{kind}-job")
        if metrics is not None:
            metrics.track(self._table_counts)
        self._recover()
        threading.Thread(target=self._reconcile_loop, name=f"{kind}-reconcile", daemon=True).start()

    # -- the API the servicers call -------------------------------------------------------

    def start(self, request_id: str, spec_json: str, total: int = 0, *, team: str = "",
              credential: Callable[[str], str] | None = None) -> jobs_pb2.Job:
        """Create and queue a job of `team`, or return the one this request id of the team
        already created. credential(job_id): the job's registry credential, issued for a new
        job only."""
        request_id = request_id or f"auto-{uuid.uuid4()}"
        if len(request_id) > 128:
            raise errors.InvalidArgument("request_id is longer than 128 characters")
        request_key = f"{team}{_REQUEST_SEP}{request_id}"
        existing = self._by_request(request_key)
        if existing is None:
            self._check_queue_room()
            self._check_team_queue(team)
            job_id = f"{self.kind}-{uuid.uuid4().hex[:16]}"
            secret = credential(job_id) if credential is not None else ""
            try:
                with self.engine.begin() as conn:
                    conn.execute(jobs_table.insert().values(
                        id=job_id, kind=self.kind, request_id=request_key, spec_json=spec_json,
                        state=State.JOB_STATE_QUEUED, step=0, total=total, message="",
                        metrics_json="{}", output_ids_json="[]", created_at=time.time(),
                        team=team, credential=secret))
            except sa.exc.IntegrityError:
                existing = self._by_request(request_key)  # a concurrent retry won the race
                self._retire(secret)
            else:
                self._submit(job_id)
                return self.get(job_id, team)
        if existing.spec_json != spec_json:
            raise errors.AlreadyExists(
                f"request_id {request_id!r} was already used for a different request "
                f"(job {existing.id}); use a new request id for a new job")
        return _to_job(existing)

    def _check_queue_room(self) -> None:
        """Refuse a new job while the queue is full: a bounded backlog, never an unbounded one."""
        limit = self.settings.max_queued_jobs
        with self.engine.connect() as conn:
            waiting = conn.execute(sa.select(sa.func.count()).select_from(jobs_table)
                                   .where(jobs_table.c.state == State.JOB_STATE_QUEUED)).scalar_one()
        if waiting >= limit:
            raise errors.ResourceExhausted(
                f"the {self.kind} queue is full: {waiting} jobs are waiting (max_queued_jobs = {limit}); "
                "retry when some have started, or cancel queued ones")

    def _check_team_queue(self, team: str) -> None:
        limit = self.quotas.of(team).queued_jobs
        if not limit:
            return
        waiting = self._count(team, State.JOB_STATE_QUEUED)
        if waiting >= limit:
            raise quotas.exceeded(
                f"team {team!r} has {waiting} {self.kind} jobs waiting, its quota "
                f"(queued_jobs = {limit}); start more when they have started, or cancel some")

    def _count(self, team: str, state: int) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(jobs_table).where(
                jobs_table.c.team == team, jobs_table.c.kind == self.kind,
                jobs_table.c.state == state)).scalar_one()

    def get(self, job_id: str, team: str | None = None) -> jobs_pb2.Job:
        """The job; for `team` (a caller's), another team's job is missing, exactly as an
        unknown id is. None: any team's (the manager's own bookkeeping)."""
        return _to_job(self._row(job_id, team))

    def _row(self, job_id: str, team: str | None = None) -> sa.Row:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs_table).where(jobs_table.c.id == job_id)).first()
        if row is None or (team is not None and row.team != team):
            raise errors.NotFound(f"no {self.kind} job with id {job_id!r}")
        return row

    def list(self, request: jobs_pb2.ListJobsRequest, team: str) -> jobs_pb2.ListJobsResponse:
        size, offset = paging.size(request.page_size), paging.decode_token(request.page_token)
        query = (sa.select(jobs_table).where(jobs_table.c.team == team)
                 .order_by(jobs_table.c.created_at.desc(), jobs_table.c.id))
        if request.state:
            query = query.where(jobs_table.c.state == request.state)
        with self.engine.connect() as conn:
            rows = conn.execute(query.offset(offset).limit(size + 1)).all()
        more = len(rows) > size
        return jobs_pb2.ListJobsResponse(
            jobs=[_to_job(r) for r in rows[:size]],
            next_page_token=paging.encode_token(offset + size) if more else "")

    def cancel(self, job_id: str, team: str) -> jobs_pb2.Job:
        """Cancel a queued or running job; a finished job is returned unchanged."""
        job = self.get(job_id, team)
        if job.state in TERMINAL:
            return job
        with self._lock:
            self._cancelling.add(job_id)
            execution = self._executions.get(job_id)
        if execution is None:
            self._finish_if_queued(job_id)
        else:
            execution.cancel()
        return self._wait_terminal(job_id, timeout=15.0)

    def watch(self, job_id: str, team: str, is_active: Callable[[], bool]
              ) -> Iterator[jobs_pb2.JobEvent]:
        """The job's current state, then every change until it ends or the client leaves."""
        self._row(job_id, team)
        inbox: queue.Queue = queue.Queue()
        with self._lock:
            self._subscribers.setdefault(job_id, []).append(inbox)
        try:
            job = self.get(job_id)
            yield event_of(job)
            if job.state in TERMINAL:
                return
            while is_active():
                try:
                    event = inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                yield event
                if event.state in TERMINAL:
                    return
        finally:
            with self._lock:
                self._subscribers[job_id].remove(inbox)
                if not self._subscribers[job_id]:
                    del self._subscribers[job_id]

    def shutdown(self) -> None:
        """Stop workers; their jobs become INTERRUPTED (kept, not lost); queued ones stay queued.
        With a backend whose workers outlive the service (Kubernetes), the workers keep running
        and their jobs stay RUNNING: the next service adopts them."""
        self._reconciling.set()
        with self._lock:
            self._closing = True
            executions = list(self._executions.values())
            timers = list(self._timers.values())
        for timer in timers:
            timer.cancel()
        for execution in executions:
            execution.detach()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.backend.survives_shutdown:
            return
        self._mark_running(State.JOB_STATE_INTERRUPTED,
                           f"the {self.kind} service shut down while this job ran; " + (
                               "it continues from its last saved state when the service starts"
                               if self.resumable else "start it again with a new request id"))

    # -- internals -----------------------------------------------------------------------

    def _by_request(self, request_id: str) -> sa.Row | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(jobs_table).where(jobs_table.c.request_id == request_id)).first()

    def _recover(self) -> None:
        """On start: jobs left RUNNING whose worker the backend still has (a Kubernetes Job) are
        followed again; other RUNNING ones are INTERRUPTED; QUEUED ones run again, and so do
        INTERRUPTED ones when the workers can resume."""
        self._adopt_running()
        if self.resumable:
            with self._lock:
                adopted = list(self._executions)
            with self.engine.begin() as conn:
                conn.execute(jobs_table.update().where(jobs_table.c.state.in_(
                    [State.JOB_STATE_RUNNING, State.JOB_STATE_INTERRUPTED]),
                    jobs_table.c.id.not_in(adopted)).values(
                    state=State.JOB_STATE_QUEUED, finished_at=None,
                    message=f"the {self.kind} service restarted; this job continues from "
                            "its last saved state"))
        else:
            self._mark_running(State.JOB_STATE_INTERRUPTED,
                               f"the {self.kind} service stopped while this job ran; "
                               "start it again with a new request id")
        with self.engine.connect() as conn:
            queued = conn.execute(sa.select(jobs_table.c.id)
                                  .where(jobs_table.c.state == State.JOB_STATE_QUEUED)
                                  .order_by(jobs_table.c.created_at)).scalars().all()
        for job_id in queued:
            self._submit(job_id)

    def _adopt_running(self) -> None:
        if not self.backend.survives_shutdown:
            return
        with self.engine.connect() as conn:
            running = conn.execute(sa.select(jobs_table.c.id).where(
                jobs_table.c.state == State.JOB_STATE_RUNNING)
                .order_by(jobs_table.c.created_at)).scalars().all()
        for job_id in running:
            try:
                execution = self.backend.adopt(job_id)
            except Exception:  # noqa: BLE001 - the job is then treated as lost (below)
                log.exception("cannot look for the job's worker", extra={"job_id": job_id})
                execution = None
            if execution is None:
                continue
            log.info("job adopted", extra={"job_id": job_id, "backend": self.backend.name})
            with self._lock:
                self._executions[job_id] = execution
            self._pool.submit(self._guarded, job_id, self._follow, job_id, execution)

    def _mark_running(self, state: int, message: str) -> None:
        with self.engine.connect() as conn:
            running = conn.execute(sa.select(jobs_table.c.id).where(
                jobs_table.c.state == State.JOB_STATE_RUNNING)).scalars().all()
        with self._lock:
            adopted = set(self._executions)
        for job_id in running:
            if job_id not in adopted:
                self._update(job_id, state=state, message=message, finished_at=time.time())

    def _table_counts(self) -> dict[int, tuple[int, float | None]]:
        """{state: (jobs, oldest created_at)} of this kind, for the metrics at scrape time."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs_table.c.state, sa.func.count(), sa.func.min(jobs_table.c.created_at))
                .where(jobs_table.c.kind == self.kind).group_by(jobs_table.c.state)).all()
        return {state: (count, oldest) for state, count, oldest in rows}

    def _observe(self, hook: str, *args: object) -> None:
        """Call a metrics hook; a failure there is logged, never fails the job."""
        if self.metrics is None:
            return
        try:
            getattr(self.metrics, hook)(*args)
        except Exception:  # noqa: BLE001
            log.exception("metrics hook failed", extra={"hook": hook})

    def _submit(self, job_id: str) -> None:
        with self._lock:
            if self._closing or job_id in self._handed:
                return
            self._handed.add(job_id)
        self._pool.submit(self._guarded, job_id, self._run, job_id)

    def _reconcile_loop(self) -> None:
        while not self._reconciling.wait(RECONCILE_SECONDS):
            try:
                self._reconcile()
            except Exception:  # noqa: BLE001 - the database may be down: next round
                log.warning("could not reconcile the job table; trying again", exc_info=True)

    def _reconcile(self) -> None:
        """Jobs no runner holds, after a database outage met their runner: a RUNNING one is
        queued again (resumable) or failed; a queued one is handed to the pool again, so none
        waits forever. The runner's own checks make this idempotent."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs_table.c.id, jobs_table.c.state).where(
                jobs_table.c.state.in_([State.JOB_STATE_QUEUED, State.JOB_STATE_RUNNING]),
                jobs_table.c.kind == self.kind).order_by(jobs_table.c.created_at)).all()
        with self._lock:
            held = set(self._executions) | set(self._handed)
        for job_id in [r.id for r in rows if r.state == State.JOB_STATE_RUNNING and r.id not in held]:
            log.warning("a running job lost its runner", extra={"job_id": job_id})
            if self.resumable:
                self._update(job_id, state=State.JOB_STATE_QUEUED, message=(
                    "its runner was lost to a database outage; it continues from its last "
                    "saved state"))
            else:
                self._update(job_id, state=State.JOB_STATE_FAILED, finished_at=time.time(),
                             message="its runner was lost to a database outage; start it again")
        queued = [r.id for r in rows if r.state == State.JOB_STATE_QUEUED] + [
            r.id for r in rows if r.state == State.JOB_STATE_RUNNING and r.id not in held and self.resumable]
        with self._lock:
            waiting = set(self._timers) | set(self._handed)
        with self._gate:
            waiting |= {j for jobs in self._deferred.values() for j in jobs}
        for job_id in queued:
            if job_id not in waiting:
                log.info("queued job handed to a runner again", extra={"job_id": job_id})
                self._submit(job_id)

    def _update(self, job_id: str, **values: object) -> jobs_pb2.Job:
        if "metrics" in values:
            values["metrics_json"] = json.dumps(values.pop("metrics"))
        if "output_ids" in values:
            values["output_ids_json"] = json.dumps(list(values.pop("output_ids")))
        with self.engine.begin() as conn:
            conn.execute(jobs_table.update().where(jobs_table.c.id == job_id).values(**values))
        job = self.get(job_id)
        self._publish(event_of(job))
        if values.get("state") in TERMINAL:
            self._observe("finished", job)
            if not (self.resumable and job.state == State.JOB_STATE_INTERRUPTED):
                self._end_credential(job_id)  # (an interrupted resumable job runs again)
        return job

    def _end_credential(self, job_id: str) -> None:
        """A finished job's credential is revoked and forgotten: nothing can use it any more."""
        with self.engine.begin() as conn:
            secret = conn.execute(sa.select(jobs_table.c.credential)
                                  .where(jobs_table.c.id == job_id)).scalar()
            if secret:
                conn.execute(jobs_table.update().where(jobs_table.c.id == job_id)
                             .values(credential=""))
        self._retire(secret or "")

    def _retire(self, secret: str) -> None:
        """Revoke a job credential at the registry, with the credential itself (a key may
        revoke itself; the service holds no key that could)."""
        if not secret or not self.settings.registry_address:
            return
        from lambdascope.client import Client

        try:
            with Client(registry=self.settings.registry_address, api_key=secret, timeout=10,
                        tls=tls.of_service(self.settings)) as client:
                client.revoke_key(auth.split_key(secret)[0])
        except Exception:  # noqa: BLE001 - it expires on its own; the job's end stands
                log.warning("could not revoke a finished job's credential; it expires on its own")

    def _publish(self, event: jobs_pb2.JobEvent) -> None:
        with self._lock:
            inboxes = list(self._subscribers.get(event.job_id, ()))
        for inbox in inboxes:
            inbox.put(event)

    def _finish_if_queued(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            changed = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.state == State.JOB_STATE_QUEUED)
                .values(state=State.JOB_STATE_CANCELLED, message="cancelled before it started",
                        finished_at=time.time())).rowcount
        if changed:
            job = self.get(job_id)
            self._publish(event_of(job))
            self._observe("finished", job)
            self._end_credential(job_id)

    def _wait_terminal(self, job_id: str, timeout: float) -> jobs_pb2.Job:
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job.state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.05)
            job = self.get(job_id)
        return job

    def _guarded(self, job_id: str, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a job's failure must never kill the pool thread
            log.exception("job runner failed", extra={"job_id": job_id})
            self._observe("count_exception", exc)
            with self._lock:
                self._executions.pop(job_id, None)
            try:
                self._update(job_id, state=State.JOB_STATE_FAILED, finished_at=time.time(),
                             message="internal error while running the job (see the service log)")
                self._wake(self._row(job_id).team)  # (extra wakes are harmless: _run checks again)
            except Exception:  # noqa: BLE001 - the database is down: the job stays as it was
                log.exception("could not record the runner's failure", extra={"job_id": job_id})
        finally:
            with self._lock:
                self._handed.discard(job_id)

    def _run(self, job_id: str) -> None:
        with self._lock:
            if self._closing or job_id in self._cancelling:
                return
        team = self._row(job_id).team
        with self._gate:
            limit = self.quotas.of(team).running_jobs
            if limit and self._count(team, State.JOB_STATE_RUNNING) >= limit:
                self._deferred.setdefault(team, collections.deque()).append(job_id)
                return
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    jobs_table.update()
                    .where(jobs_table.c.id == job_id, jobs_table.c.state == State.JOB_STATE_QUEUED)
                    .values(state=State.JOB_STATE_RUNNING, started_at=time.time(),
                            attempts=jobs_table.c.attempts + 1)).rowcount
        if not claimed:
            return
        row = self._row(job_id)
        job = _to_job(row)
        self._publish(event_of(job))
        execution = self.backend.start(job_id, job.spec_json, row.credential)
        with self._lock:
            self._executions[job_id] = execution
            cancelled_meanwhile = job_id in self._cancelling
            closing = self._closing
        if cancelled_meanwhile:  # a cancel came between the claim and the start
            execution.cancel()
        elif closing:  # so did a shutdown
            execution.detach()
        self._follow(job_id, execution)

    def _follow(self, job_id: str, execution: backends.Execution) -> None:
        """Apply the worker's progress until it ends, record how it ended, and start the
        team's next deferred job."""
        try:
            self._record_end(job_id, execution)
        finally:
            self._wake(self._row(job_id).team)

    def _wake(self, team: str) -> None:
        """One of the team's jobs stopped running: start its oldest deferred job still queued."""
        with self._gate:
            waiting = self._deferred.get(team)
            while waiting and not self._closing:
                job_id = waiting.popleft()
                if self._row(job_id).state == State.JOB_STATE_QUEUED:
                    self._submit(job_id)
                    return

    def _record_end(self, job_id: str, execution: backends.Execution) -> None:
        outcome = execution.run(lambda event: self._progress(job_id, event))
        with self._lock:
            self._executions.pop(job_id, None)
            cancelled = job_id in self._cancelling
            closing = self._closing
        now = time.time()
        if cancelled:
            self._update(job_id, state=State.JOB_STATE_CANCELLED, message="cancelled by request",
                         finished_at=now)
        elif closing:
            return  # shutdown() marks it INTERRUPTED, or the backend's worker runs on
        elif outcome.state == State.JOB_STATE_SUCCEEDED:
            final = outcome.final
            self._update(job_id, state=State.JOB_STATE_SUCCEEDED, finished_at=now,
                         message=final.message, output_ids=final.output_ids,
                         metrics=dict(final.metrics), step=final.step, total=final.total)
        elif outcome.retryable and self._retry(job_id, outcome):
            return
        else:
            self._update(job_id, state=State.JOB_STATE_FAILED, message=outcome.message,
                         finished_at=now)
        log.info("job ended", extra={"job_id": job_id, **outcome.detail})

    def _retry(self, job_id: str, outcome: backends.Outcome) -> bool:
        """Queue a job whose worker failed for a reason other than its input again, after a
        backoff, while attempts remain (as a Kubernetes Job retries its pods); False when none do."""
        attempts = self.get(job_id).attempts
        if attempts > self.settings.job_backoff_limit:
            self._update(job_id, state=State.JOB_STATE_FAILED, finished_at=time.time(),
                         message=f"{outcome.message} (attempt {attempts} of {attempts}; no retries left)")
            log.info("job ended", extra={"job_id": job_id, "attempts": attempts, **outcome.detail})
            return True
        delay = min(MAX_RETRY_SECONDS, self.settings.retry_backoff_seconds * 2 ** (attempts - 1))
        resume = "from its last saved state" if self.resumable else "from the start"
        self._update(job_id, state=State.JOB_STATE_QUEUED, message=(
            f"attempt {attempts} failed: {outcome.message}; retrying {resume} in {delay:.0f} s "
            f"(attempt {attempts + 1} of {self.settings.job_backoff_limit + 1})"))
        log.info("job retried", extra={"job_id": job_id, "attempts": attempts, "delay_s": delay, **outcome.detail})
        timer = threading.Timer(delay, self._resubmit, args=(job_id,))
        timer.daemon = True
        with self._lock:
            self._timers[job_id] = timer
        timer.start()
        return True

    def _resubmit(self, job_id: str) -> None:
        with self._lock:
            self._timers.pop(job_id, None)
            if self._closing:
                return  # it stays QUEUED: the next service start runs it
        self._submit(job_id)

    def _progress(self, job_id: str, event: jobs_pb2.JobEvent) -> None:
        self._update(job_id, step=event.step, total=event.total, metrics=dict(event.metrics),
                     message=event.message)
        self._observe("progress", job_id, event.metrics)
