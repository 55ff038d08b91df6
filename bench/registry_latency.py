"""Registry metadata latency under concurrent clients, on 10,000 versions (not run by make test).

    .venv/bin/python bench/registry_latency.py                  # 10,000 versions, 32 clients, 20 s each run
    .venv/bin/python bench/registry_latency.py --quick          # harness check: 1,000 versions, 8 clients, 5 s
    .venv/bin/python bench/registry_latency.py --backend sqlite-local

The registry runs as its own process on a fresh PostgreSQL database (127.0.0.1:5432) and an S3
bucket on moto's server (its own process). One small artifact goes up through the RPC; then
--versions versions sharing it are inserted through the product's store API
(`RegistryStore.pin_object` + `add_version`, the calls the upload RPC makes), spread over
--models models (tags parity=even|odd, bucket=b0..b9 (independent of parity), team=team-0..4,
lineage job ids, aliases "production" and "candidate" on every model), interleaved in creation
order as concurrent training runs would leave them.

Then --clients client threads (--processes processes x threads each, so the client's own GIL is
not the bottleneck; each thread has its own Client and channel) run a closed loop for --seconds,
each picking an operation at random:

    get id / get latest / get alias   GetModelVersion by "mv-...", "name/latest", "name@production"
    list                              ListModelVersions of a model, page_size 50: first page, then
                                      the next page (models hold ~100 versions: two pages)
    search                            SearchModelVersions with tag filters, page_size 50: one of
                                      {parity} (~5,000 matches), {parity, bucket} (~500), or
                                      model_name + {parity} (~50); first page then up to
                                      --search-pages next pages through the page tokens

That closed loop measures the registry at saturation: its latencies are mostly queueing, clients
divided by throughput (Little's law). A second closed loop (the floor) has the same clients call
the no-op Platform.Describe on the registry's own server: gRPC, the server's interceptors and the
clients' own work, no registry work, so the latency no registry could beat on this machine under
that load. Then the same clients run open loops (--rates): operations
arrive at a fixed total rate with exponential gaps, and a call's latency counts from its scheduled
start, so a call held up behind a slow one is charged for the wait. That gives latency against
offered load, and the highest rate at which both targets hold.

Every call's latency is measured in the client around the stub call, so it includes the client's
own (Python, GIL-bound) work, the server's queueing and the SQL. The registry's own
grpc_server_handling_seconds histogram (its /metrics endpoint) is scraped before and after to show
the time spent inside the handlers. A 1-client baseline in the same run gives the unloaded latency,
and the store's calls are timed in this process (no gRPC) with their SQL statements counted, to
show where a call's time goes. CPU seconds of the registry, PostgreSQL and the client processes are
read from /proc. Targets (the issue): p99 < 20 ms for a get, < 50 ms for a search page.
Writes bench/results/registry_latency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

# The team of the admin key that fills the registry (the platform's default team).
TEAM = "default"

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import grpc  # noqa: E402

from lambdascope.client import Client  # noqa: E402
from lambdascope.v1 import platform_pb2, platform_pb2_grpc, registry_pb2  # noqa: E402

TARGET_GET_P99_MS, TARGET_SEARCH_P99_MS = 20.0, 50.0
NOOP = "no-op (Describe)"
GET_KINDS = ("get id", "get latest", "get alias")
LIST_KINDS = ("list first page", "list next page")
SEARCH_KINDS = ("search first page", "search next page")
KINDS = GET_KINDS + LIST_KINDS + SEARCH_KINDS + (NOOP,)
# Operation weights (an operation may be several calls: list and search follow page tokens).
MIX = {"get id": 0.25, "get latest": 0.15, "get alias": 0.15, "list": 0.2, "search": 0.25}
PAGE = 50


# -- the client side (runs in spawned processes) ----------------------------------------------

def _run_op(stub, rng: random.Random, ids: list[str], models: list[str], search_pages: int,
            record, scheduled: float | None = None) -> None:
    """One operation. With `scheduled` (open loop), its first call's latency counts from that
    moment, not from when the call went out: a call delayed by a slow predecessor is charged
    for the wait (no coordinated omission). A PlatformStub makes every operation the no-op
    Platform.Describe (the floor: gRPC, the server's interceptors, no registry work)."""
    timeout = 30.0
    if isinstance(stub, platform_pb2_grpc.PlatformStub):
        began = time.perf_counter() if scheduled is None else scheduled
        stub.Describe(platform_pb2.DescribeRequest(), timeout=timeout)
        record(NOOP, time.perf_counter() - began)
        return
    op = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if op.startswith("get"):
        model = rng.choice(models)
        ref = {"get id": lambda: rng.choice(ids), "get latest": lambda: f"{model}/latest",
               "get alias": lambda: f"{model}@production"}[op]()
        began = time.perf_counter() if scheduled is None else scheduled
        stub.GetModelVersion(registry_pb2.GetModelVersionRequest(version_id=ref), timeout=timeout)
        record(op, time.perf_counter() - began)
        return
    if op == "list":
        request = registry_pb2.ListModelVersionsRequest(model_name=rng.choice(models), page_size=PAGE)
        pages, kinds = 2, LIST_KINDS
    else:
        parity, bucket = rng.choice(("even", "odd")), f"b{rng.randrange(10)}"
        shape = rng.randrange(3)
        if shape == 0:
            request = registry_pb2.SearchModelVersionsRequest(tags={"parity": parity}, page_size=PAGE)
        elif shape == 1:
            request = registry_pb2.SearchModelVersionsRequest(
                tags={"parity": parity, "bucket": bucket}, page_size=PAGE)
        else:
            request = registry_pb2.SearchModelVersionsRequest(
                model_name=rng.choice(models), tags={"parity": parity}, page_size=PAGE)
        pages, kinds = 1 + search_pages, SEARCH_KINDS
    call = stub.ListModelVersions if op == "list" else stub.SearchModelVersions
    for page in range(pages):
        began = scheduled if page == 0 and scheduled is not None else time.perf_counter()
        reply = call(request, timeout=timeout)
        record(kinds[0] if page == 0 else kinds[1], time.perf_counter() - began)
        if not reply.next_page_token:
            return
        request.page_token = reply.next_page_token


def worker_process(spec: dict, ready, results, go) -> None:
    """`spec["threads"]` client threads, each with its own Client (channel), running operations
    for `spec["seconds"]` once `go` is set: back to back (closed loop), or, with `spec["rate"]`
    (operations per second over all clients), each thread at its share of that rate with
    exponential gaps (open loop, Poisson arrivals). Puts {kind: [seconds]} on `results`."""
    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def thread_main(index: int) -> None:
        rng = random.Random(spec["seed"] * 1000 + index)
        local: dict[str, list[float]] = {k: [] for k in KINDS}
        local_errors: dict[str, int] = {}
        with Client(registry=spec["address"], api_key=spec["api_key"]) as client:
            stub = (platform_pb2_grpc.PlatformStub(client.channel("registry")) if spec["floor"]
                    else client.registry)
            # Warm up the channel (connection, first-call setup) before the clock starts.
            for _ in range(3):
                _run_op(stub, rng, spec["ids"], spec["models"], spec["search_pages"], lambda k, s: None)
            ready.put(1)
            go.wait()
            now = time.perf_counter()
            end, scheduled = now + spec["seconds"], None
            per_thread = spec.get("rate", 0.0) / spec["clients"]
            if per_thread:
                scheduled = now + rng.expovariate(per_thread)
            while (scheduled or time.perf_counter()) < end:
                if scheduled is not None:
                    time.sleep(max(0.0, scheduled - time.perf_counter()))
                try:
                    _run_op(stub, rng, spec["ids"], spec["models"], spec["search_pages"],
                            lambda k, s: local[k].append(s), scheduled)
                except grpc.RpcError as exc:
                    code = exc.code().name
                    local_errors[code] = local_errors.get(code, 0) + 1
                if scheduled is not None:
                    scheduled += rng.expovariate(per_thread)
        with lock:
            for k, v in local.items():
                samples[k].extend(v)
            for k, v in local_errors.items():
                errors[k] = errors.get(k, 0) + v

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(spec["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put({"samples": samples, "errors": errors, "pid": os.getpid()})


# -- measuring ------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds of the live PostgreSQL backends serving `database` (their process title
    names it). Backends that ended between two readings are not seen: see _pg_stats."""
    out = {}
    if not database:
        return out
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if f" {database} " in title:
                    out[int(entry.name)] = _cpu_seconds(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return out


def _pg_stats(url: str, database: str) -> dict[str, float]:
    """pg_stat_database of `database`: sessions opened so far, seconds spent executing."""
    if not database:
        return {}
    import sqlalchemy as sa

    from lambdascope.storage import db

    engine = db.engine(url)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT sessions, active_time, xact_commit FROM pg_stat_database WHERE datname = %s",
                (database,)).first()
    finally:
        engine.dispose()
    return {"sessions": float(row[0]), "active_seconds": float(row[1]) / 1e3,
            "transactions": float(row[2])} if row else {}


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    parts = [int(x) for x in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def _scrape(metrics_address: str) -> dict[str, dict]:
    """The registry's grpc_server_handling_seconds per method: count, sum, cumulative buckets."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10).read().decode()
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "grpc_server_handling_seconds":
            continue
        for s in family.samples:
            method = s.labels.get("grpc_method")
            entry = out.setdefault(method, {"count": 0.0, "sum": 0.0, "buckets": {}})
            if s.name.endswith("_count"):
                entry["count"] = s.value
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
            elif s.name.endswith("_bucket"):
                entry["buckets"][float(s.labels["le"])] = s.value
    return out


def _server_side(before: dict, after: dict) -> dict[str, dict]:
    """Per method: calls, mean handler ms, and the histogram's bucket bound holding the p50/p99."""
    out = {}
    for method, a in after.items():
        b = before.get(method, {"count": 0.0, "sum": 0.0, "buckets": {}})
        n = a["count"] - b["count"]
        if n <= 0:
            continue
        buckets = sorted((le, a["buckets"][le] - b["buckets"].get(le, 0.0)) for le in a["buckets"])

        def bound(q):
            for le, c in buckets:
                if c >= q * n:
                    return le * 1e3
            return float("inf")

        out[method] = {"calls": int(n), "mean_ms": 1e3 * (a["sum"] - b["sum"]) / n,
                       "p50_bucket_le_ms": bound(0.5), "p99_bucket_le_ms": bound(0.99)}
    return out


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def summarize(samples: dict[str, list[float]], seconds: float) -> dict[str, dict]:
    groups = {k: samples.get(k, []) for k in KINDS}
    groups["get (all)"] = [x for k in GET_KINDS for x in samples.get(k, [])]
    groups["list (all pages)"] = [x for k in LIST_KINDS for x in samples.get(k, [])]
    groups["search (all pages)"] = [x for k in SEARCH_KINDS for x in samples.get(k, [])]
    groups["all calls"] = [x for k in KINDS for x in samples.get(k, [])]
    out = {}
    for name, values in groups.items():
        values = sorted(values)
        out[name] = {"calls": len(values), "per_second": len(values) / seconds,
                     "p50_ms": 1e3 * _quantile(values, 0.5), "p90_ms": 1e3 * _quantile(values, 0.9),
                     "p99_ms": 1e3 * _quantile(values, 0.99),
                     "max_ms": 1e3 * values[-1] if values else float("nan"),
                     "mean_ms": 1e3 * statistics.fmean(values) if values else float("nan")}
    return out


def run_load(address: str, *, processes: int, threads: int, seconds: float, ids, models,
             search_pages: int, seed: int, registry_pid: int, metrics_address: str,
             database_url: str = "", database: str = "", rate: float = 0.0,
             floor: bool = False, api_key: str = "") -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no fork of a process that already holds gRPC channels
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    for p in range(processes):
        spec = {"address": address, "api_key": api_key, "threads": threads, "seconds": seconds, "ids": ids,
                "models": models, "search_pages": search_pages, "seed": seed * 100 + p,
                "rate": rate, "clients": processes * threads, "floor": floor}
        procs.append(ctx.Process(target=worker_process, args=(spec, ready, results, go), daemon=True))
    for proc in procs:
        proc.start()
    for _ in range(processes * threads):
        ready.get(timeout=300)
    client_pids = [proc.pid for proc in procs]
    pg0 = _pg_stats(database_url, database)
    time.sleep(1.0)  # our own stats connection's session is counted before the load starts
    pg0 = _pg_stats(database_url, database)
    cpu0 = {"registry": _cpu_seconds(registry_pid),
            "clients": sum(_cpu_seconds(pid) for pid in client_pids),
            "postgres": _postgres_cpu(database)}
    busy0 = _machine_busy()
    metrics0 = _scrape(metrics_address) if metrics_address else {}
    began = time.perf_counter()
    go.set()
    collected = [results.get(timeout=seconds + 300) for _ in procs]
    wall = time.perf_counter() - began
    # Every process has finished its calls (its results are in): take the CPU readings now.
    metrics1 = _scrape(metrics_address) if metrics_address else {}
    busy1 = _machine_busy()
    pg1 = _postgres_cpu(database)
    cpu = {"registry": _cpu_seconds(registry_pid) - cpu0["registry"],
           "clients": sum(_cpu_seconds(pid) for pid in client_pids) - cpu0["clients"],
           "postgres": sum(v - cpu0["postgres"].get(pid, 0.0) for pid, v in pg1.items())}
    for proc in procs:
        proc.join(60)
    time.sleep(1.5)  # PostgreSQL publishes session statistics within a second
    pg_after = _pg_stats(database_url, database)
    pg_delta = {k: pg_after[k] - pg0.get(k, 0.0) for k in pg_after}
    if pg_delta:
        pg_delta["sessions"] -= 1  # the reading itself
    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    errors: dict[str, int] = {}
    for part in collected:
        for k, v in part["samples"].items():
            samples[k].extend(v)
        for k, v in part["errors"].items():
            errors[k] = errors.get(k, 0) + v
    ncpu = os.cpu_count() or 1
    return {
        "processes": processes, "threads_per_process": threads, "clients": processes * threads,
        "offered_operations_per_second": rate or None, "seconds": seconds, "wall_seconds": wall, "errors": errors,
        "latency": summarize(samples, seconds),
        "server_handler": _server_side(metrics0, metrics1),
        "cpu_seconds": cpu,
        "cpu_cores_used": {k: v / wall for k, v in cpu.items()},
        "postgres_stats": pg_delta,
        "machine_busy_fraction": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "machine_cpus": ncpu,
    }


# -- populating -----------------------------------------------------------------------------

def populate(store, seed_version: registry_pb2.ModelVersion, *, versions: int, models: int,
             workers: int) -> tuple[list[str], list[str], float]:
    """`versions` records sharing the seed version's artifact, model i % models; returns the
    ids, the model names and the seconds it took. Threads take disjoint models (no two insert
    into one model at once), so their versions interleave in time as concurrent runs would."""
    names = [f"bench-m{m:03d}" for m in range(models)]
    ids: list[str] = []
    lock = threading.Lock()
    sha, size = seed_version.sha256, seed_version.size_bytes

    def insert(slot: int) -> None:
        for i in range(slot, versions, workers):
            m, k = i % models, i // models
            version = registry_pb2.ModelVersion()
            version.CopyFrom(seed_version)
            version.ClearField("tags")
            version.ClearField("aliases")
            version.model_name = names[m]
            version.lineage.job_id = f"train-{m:03d}-{k // 10:03d}"
            tags = {"parity": "even" if k % 2 == 0 else "odd", "bucket": f"b{(k // 2) % 10}",
                    "team": f"team-{m % 5}"}
            store.pin_object(sha, size)
            added = store.add_version(version, tags, owner=TEAM)  # one team: the key the load uses
            with lock:
                ids.append(added.id)

    if models % workers:
        workers = 1  # keep models disjoint between threads
    began = time.perf_counter()
    threads = [threading.Thread(target=insert, args=(s,)) for s in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in names:
        store.set_alias(name, "production", f"{name}/1", "bench", TEAM)
        store.set_alias(name, "candidate", f"{name}/latest", "bench", TEAM)
    return ids, names, time.perf_counter() - began


def store_timings(store, ids: list[str], models: list[str], samples: int, seed: int) -> dict:
    """Each store call timed in this process (no gRPC), with its SQL statements counted."""
    import sqlalchemy as sa

    counter = {"statements": 0, "sql_seconds": 0.0}

    def _before(conn, cursor, statement, parameters, context, executemany):
        conn.info["_bench_t"] = time.perf_counter()

    def _after(conn, cursor, statement, parameters, context, executemany):
        counter["statements"] += 1
        counter["sql_seconds"] += time.perf_counter() - conn.info.pop("_bench_t", time.perf_counter())

    engines = {store.engine, store.reader.engine}  # the reader may be its own engine
    for eng in engines:
        sa.event.listen(eng, "before_cursor_execute", _before)
        sa.event.listen(eng, "after_cursor_execute", _after)

    rng = random.Random(seed)

    def list_request():
        m = rng.choice(models)
        return lambda: store.search_versions(
            registry_pb2.ListModelVersionsRequest(model_name=m, page_size=PAGE), TEAM, model_name=m)

    def search_request(tags, model=""):
        req = registry_pb2.SearchModelVersionsRequest(tags=tags, model_name=model, page_size=PAGE)
        return lambda: store.search_versions(req, TEAM, model_name=model, tags=tags)

    calls = {
        "get id": lambda: (lambda i: lambda: store.get_version(i, TEAM))(rng.choice(ids)),
        "get latest": lambda: (lambda m: lambda: store.get_version(f"{m}/latest", TEAM))(rng.choice(models)),
        "get alias": lambda: (lambda m: lambda: store.get_version(f"{m}@production", TEAM))(rng.choice(models)),
        "list first page": list_request,
        "search {parity} first page": lambda: search_request({"parity": rng.choice(("even", "odd"))}),
        "search {parity, bucket} first page": lambda: search_request(
            {"parity": rng.choice(("even", "odd")), "bucket": f"b{rng.randrange(10)}"}),
        "search model + {parity} first page": lambda: search_request(
            {"parity": rng.choice(("even", "odd"))}, rng.choice(models)),
    }
    out = {}
    for name, make in calls.items():
        make()()  # warm
        times = []
        counter.update(statements=0, sql_seconds=0.0)
        for _ in range(samples):
            call = make()
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        times.sort()
        out[name] = {"p50_ms": 1e3 * _quantile(times, 0.5), "p99_ms": 1e3 * _quantile(times, 0.99),
                     "mean_ms": 1e3 * statistics.fmean(times),
                     "sql_statements_per_call": counter["statements"] / samples,
                     "sql_ms_per_call": 1e3 * counter["sql_seconds"] / samples}
    # A next page of the widest search, through its token.
    req = registry_pb2.SearchModelVersionsRequest(tags={"parity": "even"}, page_size=PAGE)
    first = store.search_versions(req, TEAM, tags={"parity": "even"})
    times = []
    counter.update(statements=0, sql_seconds=0.0)
    req.page_token = first.next_page_token
    for _ in range(samples):
        began = time.perf_counter()
        store.search_versions(req, TEAM, tags={"parity": "even"})
        times.append(time.perf_counter() - began)
    times.sort()
    out["search {parity} next page"] = {
        "p50_ms": 1e3 * _quantile(times, 0.5), "p99_ms": 1e3 * _quantile(times, 0.99),
        "mean_ms": 1e3 * statistics.fmean(times),
        "sql_statements_per_call": counter["statements"] / samples,
        "sql_ms_per_call": 1e3 * counter["sql_seconds"] / samples}
    for eng in engines:
        sa.event.remove(eng, "before_cursor_execute", _before)
        sa.event.remove(eng, "after_cursor_execute", _after)
    return out


def explain(store) -> str:
    """PostgreSQL's plan of the widest search's first page: the statement search_versions runs,
    on one of the store's reading connections (its session settings included)."""
    if store.engine.dialect.name != "postgresql":
        return ""
    from services.registry import reads

    shape, params = reads.search_params(owner=TEAM, tags={"parity": "even"}, limit=PAGE + 1)
    statement = reads.search_statement(shape).params(**params)
    compiled = statement.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True})
    with store.reader.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN ANALYZE {compiled}").scalars().all()
    return "\n".join(plan)


# -- main -----------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("postgres-s3", "sqlite-local"), default="postgres-s3")
    p.add_argument("--versions", type=int, default=None, help="versions to insert (default 10000; --quick 1000)")
    p.add_argument("--models", type=int, default=100, help="models they spread over (default 100)")
    p.add_argument("--clients", type=int, default=None, help="client threads in all (default 32; --quick 8)")
    p.add_argument("--processes", type=int, default=None,
                   help="client processes the threads are spread over (default 4; --quick 2)")
    p.add_argument("--seconds", type=float, default=None, help="load duration (default 20; --quick 5)")
    p.add_argument("--baseline-seconds", type=float, default=None,
                   help="1-client baseline duration (default 5; --quick 2; 0 skips it)")
    p.add_argument("--rates", default=None,
                   help="open-loop runs after the closed loop: comma-separated operations/s offered by all "
                        "clients together, Poisson arrivals (default '25,50,100'; --quick '20'; '' skips)")
    p.add_argument("--search-pages", type=int, default=3, help="next pages a search follows (default 3)")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the closed loop of no-op Describe calls (the floor under the same clients)")
    p.add_argument("--store-samples", type=int, default=None,
                   help="in-process store timings per call kind (default 200; --quick 30; 0 skips)")
    p.add_argument("--populate-threads", type=int, default=4)
    p.add_argument("--no-analyze", action="store_true",
                   help="skip the ANALYZE after populating (PostgreSQL plans with stale statistics)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="harness check: 1,000 versions, 8 clients, 5 s")
    p.add_argument("--out", default=None,
                   help="results file (default bench/results/registry_latency.json; "
                        "registry_latency_sqlite-local.json for that backend)")
    p.add_argument("--check", action="store_true", help="exit 1 when a latency target is missed")
    return p.parse_args(argv)


def _row(name: str, s: dict) -> str:
    return (f"{name:22s} {s['calls']:7d} {s['per_second']:8.1f} {s['p50_ms']:8.1f} {s['p90_ms']:8.1f} "
            f"{s['p99_ms']:8.1f} {s['max_ms']:8.1f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import common  # the machine description, write_json (imports torch: only in the parent)
    import registry_throughput  # moto in its own process
    from lambdascope.storage import db
    from registry_backend import registry_backend
    from services.registry.store import RegistryStore

    q = args.quick
    versions = args.versions or (1000 if q else 10_000)
    clients = args.clients or (8 if q else 32)
    processes = args.processes or (2 if q else 4)
    processes = max(1, min(processes, clients))
    if clients % processes:
        raise SystemExit(f"--clients {clients} is not a multiple of --processes {processes}")
    seconds = args.seconds or (5 if q else 20)
    baseline_seconds = args.baseline_seconds if args.baseline_seconds is not None else (2 if q else 5)
    store_samples = args.store_samples if args.store_samples is not None else (30 if q else 200)
    out = pathlib.Path(args.out) if args.out else common.RESULTS / (
        "registry_latency.json" if args.backend == "postgres-s3"
        else f"registry_latency_{args.backend}.json")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="registry-latency-"))
    payload = {"benchmark": "registry_latency", "machine": common.machine(), "settings": {
        "backend": args.backend, "versions": versions, "models": args.models, "clients": clients,
        "processes": processes, "threads_per_process": clients // processes, "seconds": seconds,
        "baseline_seconds": baseline_seconds, "search_pages": args.search_pages, "page_size": PAGE,
        "mix": MIX, "seed": args.seed,
        "targets": {"get_p99_ms": TARGET_GET_P99_MS, "search_page_p99_ms": TARGET_SEARCH_P99_MS}}}
    began_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        s3 = (stack.enter_context(registry_throughput.moto_process())
              if args.backend == "postgres-s3" else None)
        backend = stack.enter_context(registry_backend(args.backend, workdir / "registry", s3))
        client = stack.enter_context(backend.client())
        # One real artifact, stored once; every version below shares it.
        arch = registry_throughput.architecture_for(4096)
        art = workdir / "seed.safetensors"
        registry_throughput.write_checkpoint(art, arch, seed=args.seed)
        seed_version = client.upload_model(art, "bench-seed", architecture=arch)
        store = RegistryStore(backend.settings().database)
        threads = 1 if args.backend == "sqlite-local" else args.populate_threads
        print(f"registry latency on {args.backend}: inserting {versions} versions over {args.models} models "
              f"through RegistryStore ({threads} threads)...", flush=True)
        ids, models, pop_s = populate(store, seed_version, versions=versions, models=args.models,
                                      workers=threads)
        payload["populate"] = {"seconds": pop_s, "versions_per_second": versions / pop_s}
        print(f"  {versions} versions + {2 * len(models)} aliases in {pop_s:.1f} s "
              f"({versions / pop_s:.0f} versions/s)", flush=True)
        plans = payload["explain_search_parity_first_page"] = {}
        if store.engine.dialect.name == "postgresql":
            plans["before_analyze"] = explain(store)
            if not args.no_analyze:
                # What autovacuum's analyze leaves after a bulk insert; right after the insert
                # the planner still believes the tables are nearly empty.
                with store.engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
                plans["after_analyze"] = explain(store)
            for label, plan in plans.items():
                lines = plan.splitlines()
                nodes = [ln.strip().removeprefix("->").strip().split("  (cost")[0]
                         for ln in lines if "(cost=" in ln]
                print(f"  PostgreSQL plan of the {{parity}} search's first page, {label.replace('_', ' ')}: "
                      f"{' > '.join(nodes)}; {lines[-1].strip()}")
        if store_samples:
            timings = store_timings(store, ids, models, store_samples, args.seed)
            payload["store_in_process"] = timings
            print(f"store calls in this process (no gRPC), {store_samples} each, one at a time:")
            print(f"  {'call':36s} {'p50 ms':>7s} {'p99 ms':>7s} {'SQL stmts':>9s} {'SQL ms':>7s}")
            for name, t in timings.items():
                print(f"  {name:36s} {t['p50_ms']:7.2f} {t['p99_ms']:7.2f} "
                      f"{t['sql_statements_per_call']:9.1f} {t['sql_ms_per_call']:7.2f}")
        store.engine.dispose()
        registry_pid = backend.platform.procs["registry"].pid
        metrics_address = backend.platform.metrics.get("registry", "")
        database_url = backend.settings().database
        database = database_url.rpartition("/")[2] if args.backend == "postgres-s3" else ""
        common.write_json(out, payload, final=False)
        runs = []
        if baseline_seconds:
            runs.append(("baseline", 1, 1, baseline_seconds, 0.0))
        runs.append(("load", processes, clients // processes, seconds, 0.0))
        if not args.no_floor:
            runs.append(("floor", processes, clients // processes, seconds, 0.0))
        rates = [float(r) for r in (args.rates if args.rates is not None else ("20" if q else "25,50,100"))
                 .split(",") if r.strip()]
        runs += [(f"open {r:g}/s", processes, clients // processes, seconds, r) for r in rates]
        header = (f"{'kind':22s} {'calls':>7s} {'calls/s':>8s} {'p50 ms':>8s} {'p90 ms':>8s} "
                  f"{'p99 ms':>8s} {'max ms':>8s}")
        for label, nproc, nthreads, secs, rate in runs:
            loop = (f"open loop, {rate:g} operations/s offered in all (Poisson), latency from each "
                    "operation's scheduled start" if rate else "closed loop")
            if label == "floor":
                loop += (", every call the no-op Platform.Describe on the registry's server (gRPC "
                         "and its interceptors, no registry work): the floor under the same clients")
            print(f"\n{label}: {nproc * nthreads} client thread(s) in {nproc} process(es), {secs:g} s, {loop}",
                  flush=True)
            res = run_load(backend.address, api_key=backend.api_key, processes=nproc, threads=nthreads, seconds=secs, ids=ids,
                           models=models, search_pages=args.search_pages, seed=args.seed,
                           registry_pid=registry_pid, metrics_address=metrics_address,
                           database_url=database_url, database=database, rate=rate,
                           floor=label == "floor")
            payload[label] = res
            print(header)
            print("-" * len(header))
            for name in (*KINDS, "get (all)", "search (all pages)", "all calls"):
                if name == "get (all)":
                    print("-" * len(header))
                if res["latency"][name]["calls"] or name not in (*KINDS, "get (all)", "search (all pages)"):
                    print(_row(name, res["latency"][name]))
            if res["errors"]:
                print(f"errors: {res['errors']}")
            cores = res["cpu_cores_used"]
            print(f"CPU cores used: registry {cores['registry']:.2f}, PostgreSQL backends alive at the end "
                  f"{cores['postgres']:.2f}, clients {cores['clients']:.2f}; whole machine "
                  f"{100 * res['machine_busy_fraction']:.0f}% busy of {res['machine_cpus']} CPUs "
                  "(other work on the machine included)")
            pg = res["postgres_stats"]
            if pg:
                print(f"PostgreSQL (pg_stat_database): {pg['sessions']:.0f} sessions opened during the run, "
                      f"{pg['active_seconds']:.1f} s executing statements, {pg['transactions']:.0f} commits")
            if res["server_handler"]:
                print("inside the registry's handlers (its grpc_server_handling_seconds): " + "; ".join(
                    f"{m} mean {v['mean_ms']:.1f} ms, p99 <= {v['p99_bucket_le_ms']:g} ms"
                    for m, v in sorted(res["server_handler"].items())
                    if m in ("GetModelVersion", "ListModelVersions", "SearchModelVersions")))
            common.write_json(out, payload, final=False)
    load = payload["load"]["latency"]
    summary = {
        "get_p99_ms": load["get (all)"]["p99_ms"], "search_page_p99_ms": load["search (all pages)"]["p99_ms"],
        "throughput_calls_per_second": load["all calls"]["per_second"],
        "target_get_p99_ms": TARGET_GET_P99_MS, "target_search_page_p99_ms": TARGET_SEARCH_P99_MS,
        "total_wall_seconds": time.perf_counter() - began_all,
    }
    summary["get_target_met"] = summary["get_p99_ms"] < TARGET_GET_P99_MS
    summary["search_target_met"] = summary["search_page_p99_ms"] < TARGET_SEARCH_P99_MS
    open_runs = []
    for label, res in payload.items():
        if label.startswith("open ") and isinstance(res, dict) and "latency" in res:
            lat = res["latency"]
            open_runs.append({"offered_operations_per_second": res["offered_operations_per_second"],
                              "calls_per_second": lat["all calls"]["per_second"],
                              "get_p50_ms": lat["get (all)"]["p50_ms"], "get_p99_ms": lat["get (all)"]["p99_ms"],
                              "search_page_p50_ms": lat["search (all pages)"]["p50_ms"],
                              "search_page_p99_ms": lat["search (all pages)"]["p99_ms"],
                              "targets_met": lat["get (all)"]["p99_ms"] < TARGET_GET_P99_MS
                              and lat["search (all pages)"]["p99_ms"] < TARGET_SEARCH_P99_MS})
    summary["open_loop"] = open_runs
    if "floor" in payload:
        noop = payload["floor"]["latency"][NOOP]
        summary["floor_noop"] = {"p50_ms": noop["p50_ms"], "p99_ms": noop["p99_ms"],
                                 "calls_per_second": noop["per_second"]}
    met = [r["calls_per_second"] for r in open_runs if r["targets_met"]]
    summary["highest_calls_per_second_meeting_targets"] = max(met) if met else None
    payload["summary"] = summary
    common.write_json(out, payload)
    print(f"\nunder {clients} clients: get p99 {summary['get_p99_ms']:.1f} ms (target < {TARGET_GET_P99_MS:g}: "
          f"{'met' if summary['get_target_met'] else 'NOT met'}), search page p99 "
          f"{summary['search_page_p99_ms']:.1f} ms (target < {TARGET_SEARCH_P99_MS:g}: "
          f"{'met' if summary['search_target_met'] else 'NOT met'}), "
          f"{summary['throughput_calls_per_second']:.0f} calls/s in all (closed loop: the registry's capacity)")
    if "floor_noop" in summary:
        f = summary["floor_noop"]
        print(f"floor, the no-op Describe under the same {clients} closed-loop clients: p50 {f['p50_ms']:.1f} / "
              f"p99 {f['p99_ms']:.1f} ms at {f['calls_per_second']:.0f} calls/s")
    for r in open_runs:
        print(f"open loop, {r['offered_operations_per_second']:g} operations/s offered ({r['calls_per_second']:.0f} "
              f"calls/s): get p50 {r['get_p50_ms']:.1f} / p99 {r['get_p99_ms']:.1f} ms, search page p50 "
              f"{r['search_page_p50_ms']:.1f} / p99 {r['search_page_p99_ms']:.1f} ms: targets "
              f"{'met' if r['targets_met'] else 'NOT met'}")
    print(f"total wall time {summary['total_wall_seconds']:.0f} s; results in {out}")
    import shutil
    shutil.rmtree(workdir, ignore_errors=True)
    ok = summary["get_target_met"] and summary["search_target_met"]
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
