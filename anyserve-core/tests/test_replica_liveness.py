"""Liveness and workers on their way back, in process: probes, the pool's verdict, offers' states, waiting.

Workers are fake connections: the pool and the prober only see a
handshake and whether a probe is answered in time. Each test runs its
coroutine in one ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from anyserve.builtins.subset import SubsetMatcher
from anyserve.errors import Unavailable
from anyserve.plugins import create_plugin_manager
from anyserve.protocol import RequestMeta, names
from anyserve.replica.liveness import Liveness
from anyserve.replica.pool import WorkerPool, WorkerSlot

ECHO = {"type": "echo"}


class FakeConnection:
    """A worker's handshake and answers; ``running`` cleared, it answers nothing (as a stopped process)."""

    def __init__(self, *capabilities: Mapping[str, Any]) -> None:
        self.hello: dict[str, Any] = {"capabilities": [dict(c) for c in capabilities], "pid": 4242}
        self.in_flight = 0
        self.closed = False
        self.running: asyncio.Event | None = None

    async def infer(self, payload: bytes, query: Mapping[str, str]) -> bytes:
        if self.running is not None:
            await self.running.wait()
        return b"" if names.PROBE_KEY in query else b"reply"

    async def close(self) -> None:
        self.closed = True


def stoppable() -> FakeConnection:
    worker = FakeConnection(ECHO)
    worker.running = asyncio.Event()
    worker.running.set()
    return worker


def pool_with(connection: FakeConnection) -> tuple[WorkerPool, WorkerSlot, list[str]]:
    pool = WorkerPool(SubsetMatcher(), create_plugin_manager(entrypoints=False, env={}))
    changes: list[str] = []
    pool.on_change = lambda: changes.append("changed")
    slot = WorkerSlot.from_connection("w0", connection)
    pool.add(slot)
    changes.clear()
    return pool, slot, changes


def test_a_worker_that_leaves_a_probe_unanswered_is_out_of_routing_until_it_answers() -> None:
    async def main() -> None:
        worker = stoppable()
        pool, slot, changes = pool_with(worker)
        liveness = Liveness(pool, interval=0.01, timeout=0.05)
        assert await liveness.probe(slot) is True and pool.choose(ECHO, stream=False) is not None
        worker.running.clear()
        assert await liveness.probe(slot) is False
        assert pool.choose(ECHO, stream=False) is None and not slot.responsive
        assert pool.snapshot()[0]["responsive"] is False
        assert pool.plain_offers() == [{"type": "echo", "state": "failed"}]
        assert pool.coming(ECHO, stream=False) == "worker w0 does not answer its liveness probes"
        assert changes == ["changed"]  # the router is told
        worker.running.set()
        assert await liveness.probe(slot) is True
        assert pool.choose(ECHO, stream=False) is not None and pool.plain_offers() == [{"type": "echo", "state": "hot"}]

    asyncio.run(main())


def test_the_prober_runs_by_itself_and_stops() -> None:
    async def main() -> None:
        worker = stoppable()
        pool, slot, _ = pool_with(worker)
        liveness = Liveness(pool, interval=0.01, timeout=0.05)
        worker.running.clear()
        liveness.start()
        for _ in range(100):
            if not slot.responsive:
                break
            await asyncio.sleep(0.01)
        await liveness.stop()
        assert not slot.responsive

    asyncio.run(main())


def test_a_request_waits_for_a_restarting_worker_and_is_served_when_it_is_back() -> None:
    async def main() -> None:
        pool, slot, _ = pool_with(FakeConnection(ECHO))
        pool.remove("w0")
        pool.restarting["w0"] = slot
        assert pool.plain_offers() == [{"type": "echo", "state": "starting"}]
        back = WorkerSlot.from_connection("w0", FakeConnection(ECHO))
        asyncio.get_running_loop().call_later(0.05, pool.add, back)
        chosen, handler = await pool.wait_for(RequestMeta(query=ECHO), stream=False)
        assert chosen is back and handler == 0 and pool.restarting == {}

    asyncio.run(main())


def test_a_worker_that_does_not_come_back_in_time_is_unavailable_not_not_found() -> None:
    async def main() -> None:
        pool, slot, _ = pool_with(FakeConnection(ECHO))
        pool.remove("w0")
        pool.restarting["w0"] = slot
        pool.wait_seconds = 0.05
        with pytest.raises(Unavailable, match=r"worker w0 is restarting.*retry shortly \(request r7\)"):
            await pool.wait_for(RequestMeta(query=ECHO, request_id="r7"), stream=False)
        assert pool.coming({"type": "other"}, stream=False) is None

    asyncio.run(main())
