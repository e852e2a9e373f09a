"""Several processes share one store: readers see nothing or whole objects, never a part."""

from __future__ import annotations

import importlib
import multiprocessing
import queue
import time
from pathlib import Path

import pytest

from anyserve_objects_fs import FileStore

WRITERS = 4
ROUNDS = 50
TIME_LIMIT = 120.0


def test_processes_writing_and_reading_the_same_keys_never_see_a_partial_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned children inherit sys.path
    workers = importlib.import_module("_fs_workers")
    root = str(tmp_path / "objects")
    FileStore(root)

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    stop = ctx.Event()
    deadline = time.monotonic() + TIME_LIMIT
    watchers = [
        ctx.Process(target=workers.reader, args=(root, stop, deadline, results)),
        ctx.Process(target=workers.cleaner, args=(root, stop, deadline, results)),
    ]
    writers = [ctx.Process(target=workers.writer, args=(root, n, ROUNDS, results)) for n in range(WRITERS)]
    processes = watchers + writers
    for process in processes:
        process.start()
    reports: dict[str, tuple[str, object]] = {}
    try:
        while len(reports) < WRITERS:
            role, status, detail = results.get(timeout=max(1.0, deadline - time.monotonic()))
            reports[role] = (status, detail)
        stop.set()
        while len(reports) < len(processes):
            role, status, detail = results.get(timeout=30)
            reports[role] = (status, detail)
    except queue.Empty:
        pytest.fail(f"processes did not finish in time; reports so far: {reports}")
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()

    failures = {role: detail for role, (status, detail) in reports.items() if status != "ok"}
    assert not failures, "\n".join(f"{role}:\n{detail}" for role, detail in failures.items())
    assert all(reports[f"writer {n}"][1] == ROUNDS for n in range(WRITERS))
    assert reports["reader"][1] >= len(workers.SHARED_KEYS)  # at least its final pass saw every key

    store = FileStore(root)
    keys = {ref.key for ref in store.list()}
    survivors = {f"w{n}/r{i}/obj" for n in range(WRITERS) for i in range(0, ROUNDS, 2)}
    assert keys == set(workers.SHARED_KEYS) | survivors
    assert all(workers.intact(store.get(f"fs://{key}")) for key in workers.SHARED_KEYS)
