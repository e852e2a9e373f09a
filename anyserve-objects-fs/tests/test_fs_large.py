"""A large object streams through: written chunk by chunk, read back without loading it whole."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from anyserve_objects_fs import FileStore

MIB = 1 << 20
SIZE = 64 * MIB


def test_a_64_mib_stream_is_written_and_read_back_in_modest_memory(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    written = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        for index in range(SIZE // MIB):
            chunk = bytes([index % 251]) * MIB
            written.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        ref = store.create(chunks(), key="big/blob.bin")
        _, peak_writing = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        read = hashlib.sha256()
        total = 0
        with store.open(ref) as fh:
            while block := fh.read(MIB):
                read.update(block)
                total += len(block)
        _, peak_reading = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert ref.size == SIZE and total == SIZE
    assert read.digest() == written.digest()
    # A chunk or two in flight, never the object: 64 MiB held anywhere would show here.
    assert peak_writing < 8 * MIB, peak_writing
    assert peak_reading < 8 * MIB, peak_reading

    view = store.map(ref)
    assert view.nbytes == SIZE
    assert view[5 * MIB] == 5 and view[SIZE - 1] == (SIZE // MIB - 1) % 251
    view.release()
