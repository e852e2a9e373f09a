"""Throughput of several systems measured in turns of a second, all of them running the whole time.

On a shared machine the speed of the server core drifts by 10-25% over
minutes, so systems measured one after another differ by the drift as
much as by their code. Here every system's router and replica are started
first and stay up; the load (W1: small protobuf echo, 64 connections; or
W3: a 256-token stream over SSE, 16 connections, counted in tokens) then
goes to one system at a time, in turns of ``slot`` seconds, round
after round. Two systems' turns in one round are a few seconds apart, so
each round gives a ratio the drift hardly touches, and the median of the
rounds' ratios is the figure. Idle systems cost little: their routers and
replicas only heartbeat.

Used by bench/hardening_bench.py and bench/observability_bench.py; the
requests are sent by this process, on the load generator's CPU.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from loadgen_clients import HttpClient, HttpConn
from loadgen_measure import proc_cpu
from loadgen_workloads import small_request, stream_request

CONNECTIONS = 64
#: W3's streams at once, as bench/run.py's W3 runs them.
STREAMS = 16


@dataclass
class Target:
    """One running system, as the load reaches it."""

    name: str
    address: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: object | None = None
    #: Processes whose CPU time is counted during this system's turns (role -> pid).
    pids: dict[str, int] = field(default_factory=dict)
    #: Requests (W3: tokens) per second of each of its turns, in order.
    rates: list[float] = field(default_factory=list)
    #: CPU seconds (user + system) each process spent during this system's turns, and the requests answered.
    cpu: dict[str, float] = field(default_factory=dict)
    requests: int = 0

    def cpu_per_request(self) -> dict[str, float]:
        """Microseconds of CPU per request, by role."""
        return {role: 1e6 * seconds / self.requests for role, seconds in self.cpu.items()} if self.requests else {}


async def _turn(
    client: HttpClient, conns: list[HttpConn], payload: bytes, seconds: float, workload: str
) -> tuple[int, float]:
    """Closed loop over ``conns`` for ``seconds``; requests (W3: tokens) answered, and per second."""
    done = 0
    end = time.monotonic() + seconds

    def token() -> None:
        nonlocal done
        done += 1

    async def loop(conn: HttpConn) -> None:
        nonlocal done
        if workload == "W3":
            run = client.streamer(conn, payload)
            while time.monotonic() < end:
                await run(token)
            return
        call = client.unary(conn, payload, "echo")
        while time.monotonic() < end:
            await call()
            done += 1

    began = time.monotonic()
    await asyncio.gather(*(loop(conn) for conn in conns))
    return done, done / (time.monotonic() - began)


async def _measure(targets: list[Target], rounds: int, slot: float, warmup: float, workload: str) -> None:
    payload = (stream_request() if workload == "W3" else small_request()).SerializeToString()
    for target in targets:
        await _run_turn(target, payload, warmup, workload, count=False)
    for i in range(rounds):
        for target in targets if i % 2 == 0 else reversed(targets):
            await _run_turn(target, payload, slot, workload, count=True)


async def _run_turn(target: Target, payload: bytes, seconds: float, workload: str, *, count: bool) -> None:
    """One turn on fresh connections (a system waits longer between its turns than routers keep idle ones)."""
    client = HttpClient(target.address, target.headers, ssl=target.ssl)  # type: ignore[arg-type]
    try:
        conns = await client.pool(STREAMS if workload == "W3" else CONNECTIONS)
        before = {role: proc_cpu(pid) for role, pid in target.pids.items()}
        done, rate = await _turn(client, conns, payload, seconds, workload)
        if count:
            for role, pid in target.pids.items():
                target.cpu[role] = target.cpu.get(role, 0.0) + proc_cpu(pid) - before[role]
            target.requests += done
            target.rates.append(rate)
    finally:
        await client.close()


def measure(
    targets: list[Target], rounds: int = 20, slot: float = 1.0, warmup: float = 1.0, workload: str = "W1"
) -> None:
    """Fill each target's ``rates``: ``rounds`` turns of ``slot`` seconds each, the order reversed every round."""
    asyncio.run(_measure(targets, rounds, slot, warmup, workload))


def paired_ratio(system: Target, base: Target) -> tuple[float, float, float]:
    """The median over rounds of ``system``'s rate over ``base``'s in the same round, with the quartiles."""
    ratios = sorted(s / b for s, b in zip(system.rates, base.rates, strict=True))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [ratios[0], statistics.median(ratios), ratios[-1]]
    return statistics.median(ratios), q[0], q[-1]
