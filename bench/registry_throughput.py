"""Registry transfer throughput against the object store directly (not run by make test).

    .venv/bin/python bench/registry_throughput.py                 # 200 MB, 3 repeats, postgres-s3
    .venv/bin/python bench/registry_throughput.py --quick         # harness check: 20 MB, 1 repeat
    .venv/bin/python bench/registry_throughput.py --backend sqlite-local

A safetensors checkpoint of a built-in MLP (~--size-mb of float32, fresh random bytes every
repeat, so content addressing never turns an upload into a no-op) goes up through the registry's
gRPC stream (`Client.upload_model`) and comes back (`Client.download_model_version`); side by
side, in the same run and alternating which goes first, the same file goes to the same S3 server
directly with the minio SDK (`fput_object` with the product's part size and parallelism,
`fget_object`, another key of the same bucket). Each repeat deletes its version (and its bytes)
and its direct object afterwards. Reports MB/s (10^6 bytes/s) per direction, the paired ratio
registry/direct (median over repeats; target >= 0.8 in both directions), and where the
registry's upload time goes, timed from outside by watching the registry's staging file:

    client hash   upload_model hashes the file before sending (until the staging file appears)
    stream        gRPC chunks received, hashed and written to the staging file (until full size)
    commit        header inspected, content pinned, stat + multipart put to S3, SQL insert
                  (until the staging file is removed)
    reply         the response reaching the client

On S3 each repeat also times the SDK's default download (`via="url"`: a presigned URL from the
registry, the bytes straight from the store, size and sha256 checked), printed apart: the target
is about the gRPC stream.

The S3 server is moto's standalone server in its own process (PostgreSQL at 127.0.0.1:5432 for
the metadata); with --backend sqlite-local the "direct" baseline is a copy (with fsync) into and
out of a directory on the same disk. Writes bench/results/registry_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import common  # sets sys.path for the project root

sys.path.insert(0, str(common.ROOT / "tests"))

import minio  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from lambdascope import architectures  # noqa: E402
from lambdascope import client as client_mod  # noqa: E402
from lambdascope.client import file_digest  # noqa: E402
from lambdascope.local import free_port  # noqa: E402
from lambdascope.storage import objects as objects_mod  # noqa: E402
from lambdascope.v1 import models_pb2, registry_pb2  # noqa: E402
from registry_backend import registry_backend  # noqa: E402

TARGET_RATIO = 0.8
MB = 1e6


# -- an S3 server in its own process ---------------------------------------------------------

@contextlib.contextmanager
def moto_process(timeout: float = 30.0):
    """moto's S3 server in a separate process (so the benchmark's GIL does not slow it);
    yields "127.0.0.1:PORT" and stops it (only this process group) on exit."""
    port = free_port()
    log = open(tempfile.gettempdir() + f"/moto-bench-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from moto.server import main; main(sys.argv[1:])",
         "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://{endpoint}/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer: it is serving
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start; see {log.name}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


# -- the checkpoint ------------------------------------------------------------------------

def architecture_for(size_bytes: int, layers: int = 4) -> models_pb2.Architecture:
    """An MLP of `layers` square layers whose float32 weights take about `size_bytes`."""
    width = max(2, int(math.sqrt(size_bytes / 4 / layers)))
    return models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=[width] * (layers + 1)))


def write_checkpoint(path: pathlib.Path, arch: models_pb2.Architecture, seed: int) -> int:
    """Fresh random weights (different bytes for every seed); the file's size."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {name: torch.randn(tuple(shape), generator=gen)
               for name, shape in architectures.expected_parameters(arch).items()}
    save_file(tensors, str(path))
    del tensors
    return path.stat().st_size


# -- timing the registry's upload from outside ------------------------------------------------

class StagingWatcher:
    """Polls the registry's staging directory: when the upload's staging file appears, when it
    reaches the full size (stream received) and when it is removed (committed)."""

    def __init__(self, staging: pathlib.Path, size: int, period: float = 0.005):
        self.staging, self.size, self.period = staging, size, period
        self.appeared = self.full = self.removed = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._before = set(self._names())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _names(self):
        try:
            return [p.name for p in self.staging.iterdir()]
        except FileNotFoundError:
            return []

    def _loop(self):
        name = None
        while not self._stop.is_set():
            now = time.perf_counter()
            if name is None:
                fresh = [n for n in self._names() if n not in self._before]
                if fresh:
                    name, self.appeared = fresh[0], now
            if name is not None:
                try:
                    size = (self.staging / name).stat().st_size
                except FileNotFoundError:
                    if self.full is None:
                        self.full = now
                    self.removed = now
                    return
                if size >= self.size and self.full is None:
                    self.full = now
            time.sleep(self.period)


# -- the two sides ----------------------------------------------------------------------------

class Direct:
    """The same transfer straight to the object store the registry uses."""

    def __init__(self, backend, workdir: pathlib.Path):
        self.backend = backend
        if backend.kind == "postgres-s3":
            env = backend.env
            self.bucket = env["LAMBDASCOPE_OBJECT_STORE"].removeprefix("s3://").partition("/")[0]
            # The product's client settings (connection pool, timeouts, retries).
            self.mc = minio.Minio(env["LAMBDASCOPE_S3_ENDPOINT"],
                                  access_key=env["LAMBDASCOPE_S3_ACCESS_KEY"],
                                  secret_key=env["LAMBDASCOPE_S3_SECRET_KEY"], secure=False,
                                  region=env["LAMBDASCOPE_S3_REGION"],
                                  http_client=objects_mod._default_http())
        else:
            self.mc = None
            self.dir = workdir / "direct-store"
            self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def describe(self) -> str:
        if self.mc is not None:
            return (f"minio SDK fput_object(part_size=0 -> 5 MiB parts, num_parallel_uploads=2) / "
                    f"fget_object against s3://{self.bucket}/bench-direct/")
        return f"copy + fsync into / out of {self.dir}"

    def upload(self, path: pathlib.Path, key: str) -> None:
        if self.mc is not None:
            self.mc.fput_object(self.bucket, key, str(path), part_size=0, num_parallel_uploads=2)
        else:
            with open(path, "rb") as src, open(self.dir / key.replace("/", "_"), "wb") as out:
                shutil.copyfileobj(src, out, objects_mod.CHUNK)
                out.flush()
                os.fsync(out.fileno())

    def download(self, key: str, dest: pathlib.Path) -> None:
        if self.mc is not None:
            self.mc.fget_object(self.bucket, key, str(dest))
        else:
            shutil.copyfile(self.dir / key.replace("/", "_"), dest)

    def remove(self, key: str) -> None:
        if self.mc is not None:
            self.mc.remove_object(self.bucket, key)
        else:
            (self.dir / key.replace("/", "_")).unlink(missing_ok=True)


def registry_round(client, backend, path: pathlib.Path, size: int, arch, workdir, name: str) -> dict:
    rec: dict = {}
    with StagingWatcher(backend.data_dir / "staging", size) as watch:
        began = time.perf_counter()
        version = client.upload_model(path, name, architecture=arch)
        ended = time.perf_counter()
    rec["upload_s"] = ended - began
    if watch.appeared is not None and watch.full is not None and watch.removed is not None:
        rec["phases_s"] = {"client_hash": watch.appeared - began,
                           "stream": watch.full - watch.appeared,
                           "commit": watch.removed - watch.full,
                           "reply": ended - watch.removed}
    dest = workdir / "registry-download.safetensors"
    first: list[float] = []

    def stamped(chunks):
        for message in chunks:
            if not first:
                first.append(time.perf_counter())
            yield message

    began = time.perf_counter()
    # What Client.download_model_version does, with the first chunk's arrival noted.
    client_mod._download(stamped(client.registry.DownloadModelVersion(
        registry_pb2.DownloadModelVersionRequest(version_id=version.id))), dest)
    rec["download_s"] = time.perf_counter() - began
    rec["download_first_chunk_s"] = first[0] - began if first else None
    if dest.stat().st_size != size:
        raise RuntimeError("registry download has the wrong size")
    dest.unlink()
    if backend.kind == "postgres-s3":
        # The SDK's default on S3: a presigned URL from the registry, the bytes straight from
        # the store, checked against the record (not the gRPC stream the target is about).
        began = time.perf_counter()
        client.download_model_version(version.id, dest, via="url")
        rec["url_download_s"] = time.perf_counter() - began
        dest.unlink()
    rec["artifact_freed"] = client.delete_model_version(version.id)
    return rec


def direct_round(direct: Direct, path: pathlib.Path, size: int, workdir, key: str) -> dict:
    rec: dict = {}
    began = time.perf_counter()
    direct.upload(path, key)
    rec["upload_s"] = time.perf_counter() - began
    dest = workdir / "direct-download.safetensors"
    began = time.perf_counter()
    direct.download(key, dest)
    rec["download_s"] = time.perf_counter() - began
    if dest.stat().st_size != size:
        raise RuntimeError("direct download has the wrong size")
    dest.unlink()
    direct.remove(key)
    return rec


def put_file_round(store, path: pathlib.Path, key: str) -> dict:
    """The product's own ObjectStore.put_file (what the registry's commit calls), run here."""
    began = time.perf_counter()
    store.put_file(key, path)
    rec = {"upload_s": time.perf_counter() - began}
    store.delete(key)
    return rec


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("postgres-s3", "sqlite-local"), default="postgres-s3")
    p.add_argument("--size-mb", type=float, default=None, help="checkpoint size (default 200; --quick 20)")
    p.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="harness check: 20 MB, 1 repeat")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a new one under /tmp)")
    p.add_argument("--out", default=None,
                   help="results file (default bench/results/registry_throughput.json; "
                        "registry_throughput_sqlite-local.json for that backend)")
    p.add_argument("--check", action="store_true", help="exit 1 when a ratio is under the target")
    return p.parse_args(argv)


def _mbps(size: int, seconds: float) -> float:
    return size / MB / seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    size_mb = args.size_mb or (20 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    out = pathlib.Path(args.out) if args.out else common.RESULTS / (
        "registry_throughput.json" if args.backend == "postgres-s3"
        else f"registry_throughput_{args.backend}.json")
    arch = architecture_for(int(size_mb * MB))
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="registry-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "registry_throughput", "machine": common.machine(),
               "settings": {"backend": args.backend, "size_mb_requested": size_mb,
                            "repeats": repeats, "architecture": {"mlp_widths": list(arch.mlp.widths)},
                            "grpc_chunk_bytes": 1 << 20, "mb": "10^6 bytes"},
               "repeats": []}
    began_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(moto_process()) if args.backend == "postgres-s3" else None
        backend = stack.enter_context(registry_backend(args.backend, workdir / "registry", s3))
        client = stack.enter_context(backend.client())
        direct = Direct(backend, workdir)
        store = backend.objects()  # the product's ObjectStore, configured as the registry's
        payload["settings"]["direct"] = direct.describe
        payload["settings"]["object_store"] = backend.objects().describe
        print(f"registry throughput on {args.backend}: {size_mb:g} MB safetensors (MLP widths "
              f"{list(arch.mlp.widths)}), {repeats} alternating repeats, fresh random bytes each; "
              f"direct = {direct.describe}")
        header = (f"{'rep':>3s} {'first':>8s} {'size MB':>8s} {'reg up':>8s} {'dir up':>8s} {'ratio':>6s} "
                  f"{'reg down':>8s} {'dir down':>8s} {'ratio':>6s}   registry upload phases (s): "
                  "hash / stream / commit / reply | put_file s | direct put s")
        print(header)
        print("-" * len(header))
        for i in range(repeats):
            path = workdir / f"checkpoint-{i}.safetensors"
            size = write_checkpoint(path, arch, seed=1000 + i + int(uuid.uuid4().int % 10**6))
            sides = ("registry", "direct", "put_file")
            order = sides[i % 3:] + sides[:i % 3]  # each side goes first in turn
            rec = {"repeat": i, "order": list(order), "size_bytes": size}
            for side in order:
                if side == "registry":
                    rec["registry"] = registry_round(client, backend, path, size, arch, workdir,
                                                     f"bench-throughput-{i}")
                elif side == "direct":
                    rec["direct"] = direct_round(direct, path, size, workdir,
                                                 f"bench-direct/{uuid.uuid4().hex}")
                else:
                    rec["put_file"] = put_file_round(store, path, f"bench-inproc/{uuid.uuid4().hex}")
            began = time.perf_counter()
            file_digest(path)  # what upload_model's own hashing costs, for comparison
            rec["client_sha256_s"] = time.perf_counter() - began
            path.unlink()
            r, d = rec["registry"], rec["direct"]
            for k in ("upload", "download"):
                r[f"{k}_mbps"] = _mbps(size, r[f"{k}_s"])
                d[f"{k}_mbps"] = _mbps(size, d[f"{k}_s"])
                rec[f"{k}_ratio"] = r[f"{k}_mbps"] / d[f"{k}_mbps"]
            ph = r.get("phases_s")
            ph_txt = " / ".join(f"{ph[k]:.2f}" for k in ("client_hash", "stream", "commit", "reply")) \
                if ph else "(staging file not seen)"
            print(f"{i:3d} {order[0]:>8s} {size / MB:8.1f} {r['upload_mbps']:8.1f} {d['upload_mbps']:8.1f} "
                  f"{rec['upload_ratio']:6.2f} {r['download_mbps']:8.1f} {d['download_mbps']:8.1f} "
                  f"{rec['download_ratio']:6.2f}   {ph_txt} | {rec['put_file']['upload_s']:.2f} | "
                  f"{d['upload_s']:.2f}", flush=True)
            payload["repeats"].append(rec)
            common.write_json(out, payload, final=False)
    reps = payload["repeats"]
    med = statistics.median

    def col(side, key):
        return [r[side][key] for r in reps]

    summary = {
        "registry_upload_mbps": med(col("registry", "upload_mbps")),
        "registry_download_mbps": med(col("registry", "download_mbps")),
        "direct_upload_mbps": med(col("direct", "upload_mbps")),
        "direct_download_mbps": med(col("direct", "download_mbps")),
        "upload_ratio": med([r["upload_ratio"] for r in reps]),
        "download_ratio": med([r["download_ratio"] for r in reps]),
        "client_sha256_mbps": med([r["size_bytes"] / MB / r["client_sha256_s"] for r in reps]),
        "target_ratio": TARGET_RATIO,
        "total_wall_seconds": time.perf_counter() - began_all,
    }
    phases = [r["registry"]["phases_s"] for r in reps if "phases_s" in r["registry"]]
    if phases:
        summary["registry_upload_phases_s"] = {k: med([p[k] for p in phases]) for k in phases[0]}
        summary["registry_upload_s"] = med(col("registry", "upload_s"))
        summary["direct_upload_s"] = med(col("direct", "upload_s"))
        summary["put_file_in_bench_process_s"] = med(col("put_file", "upload_s"))
        summary["commit_minus_direct_put_s"] = med(
            [r["registry"]["phases_s"]["commit"] - r["direct"]["upload_s"]
             for r in reps if "phases_s" in r["registry"]])
    summary["registry_download_first_chunk_s"] = med(
        [r["registry"]["download_first_chunk_s"] for r in reps])
    summary["registry_download_s"] = med(col("registry", "download_s"))
    if all("url_download_s" in r["registry"] for r in reps):
        summary["registry_url_download_mbps"] = med([_mbps(size, r["registry"]["url_download_s"])
                                                     for r in reps])
        summary["url_download_ratio"] = med([r["direct"]["download_s"] / r["registry"]["url_download_s"]
                                             for r in reps])
    summary["direct_download_s"] = med(col("direct", "download_s"))
    summary["client_sha256_s"] = med([r["client_sha256_s"] for r in reps])
    summary["upload_target_met"] = summary["upload_ratio"] >= TARGET_RATIO
    summary["download_target_met"] = summary["download_ratio"] >= TARGET_RATIO
    payload["summary"] = summary
    common.write_json(out, payload)
    print("-" * len(header))
    print(f"medians over {len(reps)} repeats (MB/s, 10^6 B/s):")
    print(f"  upload    registry {summary['registry_upload_mbps']:7.1f}   direct {summary['direct_upload_mbps']:7.1f}"
          f"   ratio {summary['upload_ratio']:.2f} (target >= {TARGET_RATIO}: "
          f"{'met' if summary['upload_target_met'] else 'NOT met'})")
    print(f"  download  registry {summary['registry_download_mbps']:7.1f}   direct {summary['direct_download_mbps']:7.1f}"
          f"   ratio {summary['download_ratio']:.2f} (target >= {TARGET_RATIO}: "
          f"{'met' if summary['download_target_met'] else 'NOT met'})")
    if "url_download_ratio" in summary:
        print(f"  download  presigned URL (the SDK's default on S3; not the stream) "
              f"{summary['registry_url_download_mbps']:7.1f}   ratio {summary['url_download_ratio']:.2f} to direct")
    if phases:
        ph = summary["registry_upload_phases_s"]
        total = sum(ph.values())
        print(f"  registry upload {summary['registry_upload_s']:.2f} s = client hash {ph['client_hash']:.2f} + stream "
              f"{ph['stream']:.2f} + commit (inspect, pin, store put, SQL) {ph['commit']:.2f} + reply {ph['reply']:.2f}"
              f" ({100 * ph['commit'] / total:.0f}% in commit); direct upload {summary['direct_upload_s']:.2f} s, "
              f"the product's put_file run in this process {summary['put_file_in_bench_process_s']:.2f} s")
    print(f"  registry download {summary['registry_download_s']:.2f} s (first chunk after "
          f"{summary['registry_download_first_chunk_s']:.3f} s; the client's sha256 check of the bytes "
          f"alone takes ~{summary['client_sha256_s']:.2f} s); direct download {summary['direct_download_s']:.2f} s")
    print(f"  client-side sha256 alone: {summary['client_sha256_mbps']:.0f} MB/s")
    print(f"total wall time {summary['total_wall_seconds']:.0f} s; results in {out}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = summary["upload_target_met"] and summary["download_target_met"]
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
