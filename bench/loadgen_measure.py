"""The load generator's measuring: closed loops, token streams, the CPU window around each run, medians.

Used by ``bench/loadgen.py`` (a script; this module is imported from its directory).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


def _cpu0() -> tuple[int, int]:
    """(busy, total) jiffies of CPU 0, the core the system under test is pinned to."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu0 "):
                fields = [int(x) for x in line.split()[1:]]
                idle = fields[3] + fields[4]
                return sum(fields) - idle, sum(fields)
    return 0, 0


#: role -> pid of the processes of the system under test (``--server-pids``).
SERVER_PIDS: dict[str, int] = {}
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class Window:
    """Wall time, this process's CPU share, core 0's busy share and each server process's CPU over one run."""

    def __init__(self) -> None:
        self.cpu0 = _cpu0()
        self.servers = {role: proc_cpu(pid) for role, pid in SERVER_PIDS.items()}
        self.cpu = time.process_time()
        self.start = time.perf_counter()

    def figures(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.start
        busy, total = _cpu0()
        return {
            "client_cpu": (time.process_time() - self.cpu) / wall,
            "server_core": (busy - self.cpu0[0]) / max(1, total - self.cpu0[1]),
            # CPU seconds per process over the whole window (the tail after the deadline included)
            "server_cpu_s": {role: proc_cpu(pid) - self.servers[role] for role, pid in SERVER_PIDS.items()},
            "wall_s": wall,
        }


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Call = Callable[[], Awaitable[Any]]


async def closed_loop(call_factory: Callable[[int], Call], concurrency: int, seconds: float, latencies: bool) -> dict:
    """``concurrency`` tasks each calling back to back for ``seconds``; completions inside the window count."""
    calls = [call_factory(i) for i in range(concurrency)]
    done = total = 0
    lat: list[float] = []
    stop = 0.0

    async def task(call: Call) -> None:
        nonlocal done, total
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            await call()
            total += 1
            t1 = time.perf_counter()
            if t1 <= stop:
                done += 1
                if latencies:
                    lat.append(t1 - t0)

    window = Window()
    stop = window.start + seconds
    await asyncio.gather(*(task(c) for c in calls))
    out = {"rate": done / seconds, "ops_total": total, **window.figures()}
    if latencies:
        out["p50_ms"] = pct(lat, 0.5) * 1e3
        out["p99_ms"] = pct(lat, 0.99) * 1e3
        out["samples"] = len(lat)
    return out


async def stream_loop(
    open_stream: Callable[[int], Callable[[Callable[[], None]], Awaitable[int]]],
    concurrency: int,
    seconds: float,
) -> dict:
    """Tokens/s over ``seconds`` with ``concurrency`` back-to-back streams; TTFT per stream."""
    streams = [open_stream(i) for i in range(concurrency)]
    tokens = total = 0
    ttft: list[float] = []
    stop = 0.0

    async def task(run: Callable[[Callable[[], None]], Awaitable[int]]) -> None:
        nonlocal tokens
        first = 0.0

        def on_token() -> None:
            nonlocal tokens, total, first
            total += 1
            now = time.perf_counter()
            if not first:
                first = now
            if now <= stop:
                tokens += 1

        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            first = 0.0
            await run(on_token)
            if first and first <= stop:
                ttft.append(first - t0)

    window = Window()
    stop = window.start + seconds
    await asyncio.gather(*(task(s) for s in streams))
    return {
        "rate": tokens / seconds,
        "ops_total": total,
        "ttft_p50_ms": pct(ttft, 0.5) * 1e3,
        "ttft_p99_ms": pct(ttft, 0.99) * 1e3,
        "streams": len(ttft),
        **window.figures(),
    }


async def repeat(runs: int, measure: Callable[[], Awaitable[dict]]) -> dict:
    """Median by ``rate`` of ``runs`` runs (its other figures come from that same run)."""
    return median_run([await measure() for _ in range(runs)])


def median_run(results: list[dict]) -> dict:
    """The run with the median ``rate`` (the lower middle one of an even count), every run's rate beside it."""
    ordered = sorted(results, key=lambda r: r["rate"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["runs"] = [round(r["rate"], 1) for r in results]
    if len(results) > 1 and statistics.mean(median["runs"]) > 0:
        median["spread"] = (max(median["runs"]) - min(median["runs"])) / statistics.median(median["runs"])
    return median
