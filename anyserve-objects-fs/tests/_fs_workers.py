"""Process bodies for the concurrency test (spawned processes import this module by name).

Every payload checks itself: an 8-byte length, the body, then the body's
SHA-256. A reader that ever saw a partial or interleaved object would find
the length or the digest wrong.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
import traceback
from collections.abc import Iterator
from typing import Any

from anyserve.errors import ObjectNotFound
from anyserve_objects_fs import FileStore

SHARED_KEYS = [f"shared/k{n}" for n in range(5)]


def payload(rng: random.Random, tag: bytes) -> bytes:
    body = tag * rng.randrange(1, 8192)
    return struct.pack(">Q", len(body)) + body + hashlib.sha256(body).digest()


def intact(blob: bytes) -> bool:
    if len(blob) < 40:
        return False
    (length,) = struct.unpack(">Q", blob[:8])
    body = blob[8:-32]
    return len(body) == length and hashlib.sha256(body).digest() == blob[-32:]


def in_pieces(blob: bytes, size: int = 4096) -> Iterator[bytes]:
    """Many small writes, so a partial file would be on disk for as long as possible."""
    for start in range(0, len(blob), size):
        yield blob[start : start + size]


def _report(results: Any, role: str, body: Any) -> None:
    try:
        results.put((role, "ok", body()))
    except BaseException:
        results.put((role, "error", traceback.format_exc()))


def writer(root: str, number: int, rounds: int, results: Any) -> None:
    def body() -> int:
        store = FileStore(root)
        rng = random.Random(number)
        for index in range(rounds):
            shared = rng.choice(SHARED_KEYS)
            blob = payload(rng, b"w%d-%d|" % (number, index))
            store.create(in_pieces(blob), key=shared)
            own = store.create(blob, key=f"w{number}/r{index}/obj", content_type="application/x-test")
            assert store.get(own) == blob, f"read back {own} differs"
            assert intact(store.get(f"fs://{shared}")), f"fs://{shared} is torn"
            if index % 2:  # empties its directory: races with cleanup's and other deletes' pruning
                assert store.delete(own)
        return rounds

    _report(results, f"writer {number}", body)


def reader(root: str, stop: Any, deadline: float, results: Any) -> None:
    def body() -> int:
        store = FileStore(root)
        checked = 0
        last_pass = False
        while not last_pass:
            last_pass = stop.is_set() or time.monotonic() > deadline
            for key in SHARED_KEYS:
                try:
                    blob = store.get(f"fs://{key}")
                    with store.open(f"fs://{key}") as fh:
                        opened = fh.read()
                except ObjectNotFound:
                    continue  # not written yet: "nothing" is an allowed answer
                assert intact(blob), f"fs://{key} read torn: {len(blob)} bytes"
                assert intact(opened), f"fs://{key} opened torn: {len(opened)} bytes"
                checked += 1
            for ref in store.list():
                assert "~" not in ref.key, f"bookkeeping file listed: {ref}"
        return checked

    _report(results, "reader", body)


def cleaner(root: str, stop: Any, deadline: float, results: Any) -> None:
    def body() -> int:
        store = FileStore(root)
        passes = 0
        while not stop.is_set() and time.monotonic() < deadline:
            assert store.cleanup(max_age_seconds=3600) == 0  # nothing is that old: it must only prune
            passes += 1
        return passes

    _report(results, "cleaner", body)
