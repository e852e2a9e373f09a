"""Micro-benchmark: unary round trips per second over one connection, inproc vs unix.

Not a test. The worker is an echo service in the same process and event
loop as the agent (what the inproc transport does anyway), so for ``unix``
the numbers include framing, the socket and both ends' asyncio overhead on
one core. Use ``--process`` to run the unix worker in its own process
(closer to production: agent and worker each get a core). The echo never
suspends, so ``inproc`` measures a plain coroutine call: its figure is the
ceiling, not a like-for-like rival.

    .venv/bin/python plugins/anyserve-transport-unix/bench_roundtrip.py [--seconds 2] [--size 64] [--process]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import Any

from anyserve.builtins.inproc import InprocTransport
from anyserve.transport import Query
from anyserve_transport_unix import UnixTransport


class Echo:
    def hello(self) -> dict[str, Any]:
        return {"capabilities": [{"type": "echo"}], "pid": os.getpid()}

    async def infer(self, payload: bytes, query: Query) -> bytes:
        return payload

    async def stream(self, payload: bytes, query: Query):  # pragma: no cover - unused
        yield payload


def _serve_in_child(address: str) -> None:
    asyncio.run(UnixTransport().serve(address, Echo()))


async def _measure(conn: Any, payload: bytes, concurrency: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await conn.infer(payload, {"type": "echo"})
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def bench(name: str, payload: bytes, seconds: float, repeat: int, in_process: bool) -> dict[int, float]:
    transport = InprocTransport() if name == "inproc" else UnixTransport()
    run_dir = tempfile.mkdtemp(prefix="asb-")
    address = transport.address(run_dir, "w0")
    child = server = None
    if in_process:
        server = asyncio.create_task(transport.serve(address, Echo()))
    else:
        child = multiprocessing.get_context("spawn").Process(target=_serve_in_child, args=(address,))
        child.start()
    try:
        conn = await transport.connect(address, timeout=10)
        await _measure(conn, payload, 8, 0.2)  # warm-up
        results = {c: max([await _measure(conn, payload, c, seconds) for _ in range(repeat)]) for c in (1, 64)}
        await conn.close()
        return results
    finally:
        if server is not None:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
        if child is not None:
            child.kill()
            child.join()
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best is reported")
    parser.add_argument("--process", action="store_true", help="run the unix worker in a separate process")
    args = parser.parse_args()
    payload = os.urandom(args.size)
    where = "in a child process" if args.process else "in-process"
    print(f"payload {args.size} B, best of {args.repeat} x {args.seconds:g} s per cell, unix worker {where}")
    print(f"{'transport':<10} {'conc=1 /s':>12} {'conc=64 /s':>12}")
    rows = {}
    for name in ("inproc", "unix"):
        in_process = name == "inproc" or not args.process
        rows[name] = asyncio.run(bench(name, payload, args.seconds, args.repeat, in_process))
        print(f"{name:<10} {rows[name][1]:>12,.0f} {rows[name][64]:>12,.0f}")
    for c in (1, 64):
        print(f"unix/inproc at concurrency {c}: {rows['unix'][c] / rows['inproc'][c]:.3f}")


if __name__ == "__main__":
    main()
