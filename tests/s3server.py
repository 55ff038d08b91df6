"""A real S3 endpoint on loopback for tests: moto's standalone server in a thread.

It accepts any credentials. Its state lives in this process and is shared by every server
started here, so tests isolate themselves with a fresh bucket each, not a fresh server.
"""
from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from moto.server import ThreadedMotoServer


@contextlib.contextmanager
def MotoS3(timeout: float = 10.0) -> Iterator[str]:  # noqa: N802 (reads as a class at use)
    """Yields the endpoint "127.0.0.1:PORT" of a running S3 server; stops it on exit."""
    # Port 0: the OS picks a free port at bind time, so parallel test runs cannot collide.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        _wait_until_answering(f"http://{endpoint}/", timeout)
        yield endpoint
    finally:
        server.stop()


class RestartableS3:
    """moto's S3 server, stopped and started again on the same port: its state lives in this
    process, so the buckets and objects outlive an outage, as a real S3's would."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, self.port = self.server.get_host_and_port()
        self.endpoint = f"{host}:{self.port}"
        _wait_until_answering(f"http://{self.endpoint}/", 10)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        _wait_until_answering(f"http://{self.endpoint}/", 10)


def _wait_until_answering(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
