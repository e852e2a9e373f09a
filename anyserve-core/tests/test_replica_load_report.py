"""What a replica reports about its load, in process: the heartbeat's report and the load every answer carries.

Workers are :class:`FakeConnection` s and worker classes start through a
:class:`FakeSupervisor`: the processes and transports behind them are not
what these tests are about, only the figures the pool, the lifecycle and
the agent hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import pytest

from anyserve import AnyServe
from anyserve.builtins.subset import SubsetMatcher
from anyserve.capability import Capability
from anyserve.plugins import create_plugin_manager
from anyserve.protocol import RequestMeta
from anyserve.protocol import messages as pb
from anyserve.protocol.names import LOAD_KEY
from anyserve.replica.agent import Agent
from anyserve.replica.lifecycle import Lifecycle
from anyserve.replica.load_report import ServiceTimes, load_report
from anyserve.replica.pool import WorkerPool, WorkerSlot
from anyserve.replica.supervisor import Supervisor, WorkerProcess
from anyserve.transport import Query
from anyserve.workers import Worker

CHAT = {"type": "chat", "model": "llama"}
CODE = {"type": "code"}
CHAT_KEY = (Capability(CHAT), False)
PAYLOAD = pb.ModelInferRequest(model_name="chat").SerializeToString()


class FakeConnection:
    """Stands in for a worker and its transport, which these tests are not about.

    Its handshake names its capabilities and concurrency; ``in_flight`` is
    set by the test, or counts requests held at ``gate`` while one is set.
    """

    def __init__(self, *capabilities: Mapping[str, Any], concurrency: int | None = 2) -> None:
        self.hello: dict[str, Any] = {"capabilities": [dict(c) for c in capabilities], "pid": 1}
        if concurrency is not None:
            self.hello["concurrency"] = concurrency
        self.in_flight = 0
        self.closed = False
        self.gate: asyncio.Event | None = None

    async def infer(self, payload: bytes, query: Query) -> bytes:
        self.in_flight += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            return b"reply"
        finally:
            self.in_flight -= 1

    async def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        yield b"chunk"

    async def close(self) -> None:
        self.closed = True


class FakeSupervisor:
    """Stands in for the supervisor and its worker processes: a class "starts" once ``gate`` opens."""

    def __init__(self, app: AnyServe, pool: WorkerPool) -> None:
        self.app, self.pool = app, pool
        self.on_class_exit: Any = None
        self.gate = asyncio.Event()

    def new_worker(self, worker_id: str, worker_class: str | None = None) -> WorkerProcess:
        return WorkerProcess(worker_id, f"fake://{worker_id}", worker_class=worker_class)

    async def launch(self, worker: WorkerProcess, timeout: float = 60.0) -> WorkerSlot:
        assert worker.worker_class is not None
        await self.gate.wait()
        spec = self.app.worker_class(worker.worker_class)
        connection = FakeConnection(*spec.describe(), concurrency=spec.max_concurrency)
        slot = WorkerSlot.from_connection(worker.id, connection, worker_class=worker.worker_class)
        self.pool.add(slot)
        return slot

    async def stop_worker(self, worker: WorkerProcess, grace: float = 10.0) -> None:
        self.pool.remove(worker.id)


class Code(Worker):
    def handle(self, request: Any) -> None: ...


def new_pool() -> WorkerPool:
    return WorkerPool(SubsetMatcher(), create_plugin_manager(entrypoints=False, env={}))


def plain(pool: WorkerPool, worker_id: str, *capabilities: Mapping[str, Any], **hello: Any) -> FakeConnection:
    connection = FakeConnection(*capabilities, **hello)
    pool.add(WorkerSlot.from_connection(worker_id, connection))
    return connection


def test_plain_workers_report_what_serves_each_offer() -> None:
    pool = new_pool()
    first = plain(pool, "w0", CHAT, {**CHAT, "stream": True})
    second = plain(pool, "w1", CHAT)
    first.in_flight, second.in_flight = 3, 1  # one request waits in w0 for a free slot
    times = ServiceTimes()
    times.observe(CHAT_KEY, 0.4)
    report = load_report(pool, None, times, queued=2, draining=False)
    assert (report["draining"], report["queued"], report["in_flight"]) == (False, 2 + 1, 4)
    unary, streaming = report["offers"]
    assert unary == {"capability": CHAT, "stream": False, "in_flight": 4, "queued": 1, "slots": 4,
                     "service_seconds": 0.4}  # fmt: skip
    assert streaming == {"capability": CHAT, "stream": True, "in_flight": 3, "queued": 1, "slots": 2}


def test_a_worker_that_does_not_say_its_concurrency_reports_no_slots_and_no_queue() -> None:
    pool = new_pool()
    plain(pool, "w0", CHAT, concurrency=None).in_flight = 9
    (entry,) = load_report(pool, None, ServiceTimes(), queued=0, draining=True)["offers"]
    assert "slots" not in entry and entry["queued"] == 0 and entry["in_flight"] == 9


def test_service_times_are_a_recent_mean() -> None:
    times = ServiceTimes(weight=0.5)
    times.observe(CHAT_KEY, 1.0)
    assert times.means[CHAT_KEY] == 1.0
    times.observe(CHAT_KEY, 3.0)
    times.observe(CHAT_KEY, 3.0)
    assert times.means[CHAT_KEY] == pytest.approx(2.5)


def test_worker_classes_report_fits_while_cold_and_their_start_time_once_started() -> None:
    app = AnyServe("classes")
    app.worker([CODE], resources={"gpus": 2}, max_concurrency=3)(Code)

    async def main() -> None:
        pool = new_pool()
        supervisor = FakeSupervisor(app, pool)
        lifecycle = Lifecycle(app, cast(Supervisor, supervisor), pool, SubsetMatcher(), {"gpus": 2})
        try:
            (cold,) = load_report(pool, lifecycle, ServiceTimes(), queued=0, draining=False)["offers"]
            assert cold == {"capability": CODE, "stream": False, "in_flight": 0, "queued": 0, "slots": 3,
                            "fits": True}  # fmt: skip
            lifecycle.budget = {"gpus": 1}  # a budget it no longer fits without evicting
            (cold,) = load_report(pool, lifecycle, ServiceTimes(), queued=0, draining=False)["offers"]
            assert cold["fits"] is False
            lifecycle.budget = {"gpus": 2}
            waiting = [asyncio.create_task(lifecycle.acquire(CODE, stream=False, timeout=10)) for _ in range(2)]
            await asyncio.sleep(0.05)  # both wait for the one start
            (starting,) = load_report(pool, lifecycle, ServiceTimes(), queued=2, draining=False)["offers"]
            assert starting["queued"] == 2 and "fits" not in starting and "load_seconds" not in starting
            supervisor.gate.set()
            await asyncio.gather(*waiting)
            (hot,) = load_report(pool, lifecycle, ServiceTimes(), queued=0, draining=False)["offers"]
            assert hot["queued"] == 0 and "fits" not in hot
            # The start was held for the 0.05 s sleep, less the moment the tasks took to begin it.
            assert hot["load_seconds"] >= 0.025
        finally:
            await lifecycle.close()

    asyncio.run(main())


class FakeContext:
    """Stands in for a gRPC call's server context, which these tests are not about: it keeps the trailer."""

    def __init__(self) -> None:
        self.trailer: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-capability-type", "chat"),)

    def time_remaining(self) -> None:
        return None

    def set_trailing_metadata(self, trailer: tuple[tuple[str, str], ...]) -> None:
        self.trailer = trailer


def new_agent(pool: WorkerPool) -> Agent:
    return Agent(pool, create_plugin_manager(entrypoints=False, env={}), replica_id="r1", max_message_bytes=1 << 20)


def test_every_answer_carries_the_load_and_only_requests_that_found_a_slot_are_timed() -> None:
    async def main() -> None:
        pool = new_pool()
        worker = plain(pool, "w0", CHAT, concurrency=1)
        agent = new_agent(pool)
        worker.gate = asyncio.Event()
        meta = RequestMeta.from_metadata((("x-capability-type", "chat"),))
        held = [asyncio.create_task(agent.infer(PAYLOAD, meta)) for _ in range(2)]  # the second waits for the slot
        await asyncio.sleep(0.01)
        assert agent.load() == (1, 2)
        context = FakeContext()
        answer = asyncio.create_task(agent.model_infer(PAYLOAD, context))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        worker.gate.set()
        await asyncio.gather(*held, answer)
        assert context.trailer == ((LOAD_KEY, "0,0"),)
        # Timed: the first request only; the second and third found the worker full.
        assert list(agent.service_times.means) == [CHAT_KEY]
        assert agent.service_times.means[CHAT_KEY] >= 0.01

    asyncio.run(main())


def test_the_load_carried_counts_requests_still_out_when_one_answers() -> None:
    async def main() -> None:
        pool = new_pool()
        slow = plain(pool, "w0", CHAT)
        plain(pool, "w1", CODE)
        agent = new_agent(pool)
        slow.gate = asyncio.Event()
        meta = RequestMeta.from_metadata((("x-capability-type", "chat"),))
        held = asyncio.create_task(agent.infer(PAYLOAD, meta))
        await asyncio.sleep(0.01)
        context = FakeContext()
        context.invocation_metadata = lambda: (("x-capability-type", "code"),)  # type: ignore[method-assign]
        await agent.model_infer(PAYLOAD, context)  # type: ignore[arg-type]
        assert context.trailer == ((LOAD_KEY, "0,1"),)  # the chat request is still out
        slow.gate.set()
        await held

    asyncio.run(main())
