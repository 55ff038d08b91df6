"""The garbage collector: remove stored bytes no record references, and abandoned staging files.

Runs on a schedule inside the registry (settings.gc_interval_seconds) and on demand
(CollectGarbage RPC, `lambdascope gc`). Content is removed only after the store marked it
"deleting" under its row lock while nothing referenced or pinned it, so a concurrent upload of
the same bytes either waits for the removal or keeps them.
"""
from __future__ import annotations

import logging
import pathlib
import threading
import time

from lambdascope.storage.objects import ObjectStore, content_key
from lambdascope.v1 import registry_pb2
from services.registry import job_state
from services.registry.store import RegistryStore

log = logging.getLogger(__name__)
CONTENT_PREFIX = "sha256/"


def collect(store: RegistryStore, objects: ObjectStore, staging_dir: pathlib.Path,
            staging_ttl: float, *, dry_run: bool = False) -> registry_pb2.CollectGarbageResponse:
    """One collection. Pins older than the staging TTL belong to uploads that died with a
    killed registry (their staging files are that old too) and no longer protect content."""
    out = registry_pb2.CollectGarbageResponse()
    now = time.time()
    for sha in store.unreferenced_objects():
        _remove(store, objects, sha, out, dry_run, staging_ttl)
    # Bytes the objects table does not know: an upload that crashed before its pin committed
    # (or files put there by hand). Only old ones: a young one may belong to an upload in flight.
    for info in objects.list(CONTENT_PREFIX):
        sha = info.key.rsplit("/", 1)[-1]
        if now - info.modified > staging_ttl and not store.known_object(sha):
            _remove(store, objects, sha, out, dry_run, staging_ttl, unknown=True)
    if staging_dir.exists():
        for path in staging_dir.iterdir():
            try:
                if path.is_file() and now - path.stat().st_mtime > staging_ttl:
                    if not dry_run:
                        path.unlink()
                    out.staging_removed += 1
            except FileNotFoundError:
                pass  # its upload finished meanwhile
    out.job_files_removed = job_state.collect(objects, store.job_credential_live, staging_ttl,
                                              dry_run=dry_run)
    if out.objects_removed or out.staging_removed or out.job_files_removed:
        log.info("garbage collected", extra={"objects": out.objects_removed,
                                             "bytes": out.bytes_freed,
                                             "staging": out.staging_removed,
                                             "job_files": out.job_files_removed, "dry_run": dry_run})
    return out


def _remove(store: RegistryStore, objects: ObjectStore, sha: str,
            out: registry_pb2.CollectGarbageResponse, dry_run: bool, staging_ttl: float,
            unknown: bool = False) -> None:
    """Remove one content's bytes (if any are stored) and its row, when the store allows."""
    key = content_key(sha)
    rules = dict(stale_pin_seconds=staging_ttl,
                 only_unknown_older_than=staging_ttl if unknown else None)
    if dry_run:
        if not store.removable(sha, **rules):
            return
        info = objects.stat(key)
    else:
        if not store.claim_for_removal(sha, **rules):
            return
        try:
            info = objects.stat(key)
            if info is not None:
                objects.delete(key)
        except BaseException:  # the object store did not answer: try again next time
            store.unclaim(sha)
            raise
        store.forget_object(sha)
    if info is not None:  # a row whose bytes never arrived (a dead upload) frees nothing
        out.objects_removed += 1
        out.bytes_freed += info.size
        out.removed_keys.append(key)


class Schedule:
    """Runs `collect` every `interval` seconds in a daemon thread until stopped."""

    def __init__(self, interval: float, run):
        self.interval = interval
        self._run = run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="registry-gc", daemon=True)

    def start(self) -> Schedule:
        if self.interval > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._run()
            except Exception:  # noqa: BLE001 - the next round tries again; the log says why
                log.exception("garbage collection failed")
