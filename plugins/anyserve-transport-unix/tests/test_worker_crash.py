"""A worker process that dies mid-request fails its requests promptly; nothing hangs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.errors import Unavailable
from anyserve_transport_unix import UnixTransport

Run = Callable[[Awaitable[Any]], Any]
WORKER = Path(__file__).with_name("_worker.py")


@pytest.fixture
def worker(sock_dir: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    address = UnixTransport().address(sock_dir, "w0")
    proc = subprocess.Popen([sys.executable, str(WORKER), address])
    try:
        yield proc, address
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


async def drain(chunks: Any) -> list[bytes]:
    return [chunk async for chunk in chunks]


def test_sigkill_fails_in_flight_requests_promptly(worker: tuple[subprocess.Popen[bytes], str], arun: Run) -> None:
    proc, address = worker

    async def main() -> None:
        conn = await UnixTransport().connect(address, timeout=15)
        assert conn.hello["pid"] == proc.pid
        calls = [asyncio.create_task(conn.infer(f"sleep:30:{i}".encode(), {})) for i in range(4)]
        calls.append(asyncio.create_task(drain(conn.stream(b"forever", {}))))
        while conn.in_flight < 5:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # let the worker start all five handlers
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        os.kill(proc.pid, signal.SIGKILL)
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        elapsed = loop.time() - killed_at
        assert elapsed < 2.0
        for result in results:
            assert isinstance(result, Unavailable), result
            assert f"worker {proc.pid} at {address} went away" in result.message
        assert conn.closed
        assert conn.in_flight == 0
        with pytest.raises(Unavailable, match="went away"):
            await conn.infer(b"after", {})
        await conn.close()

    arun(main())
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_a_restarted_worker_replaces_the_stale_socket(worker: tuple[subprocess.Popen[bytes], str], arun: Run) -> None:
    proc, address = worker
    arun(UnixTransport().connect(address, timeout=15))  # up and serving
    proc.kill()
    proc.wait(timeout=10)
    assert os.path.exists(address)  # SIGKILL leaves the socket file behind
    successor = subprocess.Popen([sys.executable, str(WORKER), address])
    try:

        async def main() -> None:
            conn = await UnixTransport().connect(address, timeout=15)
            assert conn.hello["pid"] == successor.pid
            results = await asyncio.gather(*(conn.infer(f"{i}".encode(), {"i": str(i)}) for i in range(20)))
            assert results == [f"{i}|i={i}".encode() for i in range(20)]
            await conn.close()

        arun(main())
    finally:
        successor.kill()
        successor.wait(timeout=10)
