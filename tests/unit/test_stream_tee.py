"""StreamTee: the bridge that feeds an upload to the object store while it arrives."""
from __future__ import annotations

import os
import random

import pytest

from services.registry.uploads import StreamTee, UploadAborted


def reader(sizes, out: list, seen_error: list):
    def upload(stream: StreamTee) -> None:
        rng = random.Random(1)
        try:
            while data := stream.read(rng.choice(sizes)):
                out.append(data)
        except UploadAborted as exc:
            seen_error.append(exc)
            raise
    return upload


@pytest.mark.parametrize("sizes", [[1, 5, 7], [1 << 20], [3 << 20, 100, 65536]])
def test_the_store_reads_exactly_the_bytes_written_whatever_its_read_sizes(sizes):
    data = os.urandom(3_000_000)
    out, errors = [], []
    tee = StreamTee(reader(sizes, out, errors), depth=4)
    rng, pos = random.Random(2), 0
    while pos < len(data):
        n = rng.choice([1, 100, 65536, 1 << 20])
        tee.write(data[pos:pos + n])
        pos += n
    assert tee.finish(ok=True)
    assert b"".join(out) == data and not errors


def test_the_last_chunk_is_held_back_until_the_upload_is_verified():
    out, errors = [], []
    tee = StreamTee(reader([1 << 20], out, errors), depth=4)
    for _ in range(3):
        tee.write(b"x" * 1000)
    assert tee.finish(ok=False) is False  # verification failed: the store's read raises
    assert len(errors) == 1 and sum(map(len, out)) <= 2000  # never the final chunk
