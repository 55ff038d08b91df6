"""Looking at a running platform from outside, as an operator would: its Prometheus samples
and its worker processes."""
from __future__ import annotations

import pathlib
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(address: str) -> dict[tuple[str, frozenset], float]:
    """Every sample a /metrics endpoint serves, by (name, labels)."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(address: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in scrape(address).items()
               if sample == name and wanted <= have)


def worker_pids(data_dir: pathlib.Path, module: str) -> list[int]:
    """Worker processes of the platform whose data lives in `data_dir` (read from /proc)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if module.encode() in cmdline and \
                f"LAMBDASCOPE_DATA_DIR={data_dir}".encode() in environ:
            found.append(int(entry.name))
    return found
