"""Worker classes, in process: started on demand, shared starts, failures, idle stops, the budget.

:class:`FakeSupervisor` starts and stops "workers" at once (or when a test
lets it), so each test drives :class:`Lifecycle` inside one ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import pytest

from anyserve import AnyServe
from anyserve.builtins.subset import SubsetMatcher
from anyserve.candidates import COLD, FAILED, HOT, STARTING
from anyserve.errors import ResourceExhausted, Unavailable
from anyserve.plugins import create_plugin_manager
from anyserve.replica import lifecycle as lifecycle_module
from anyserve.replica.lifecycle import CRASH_LIMIT, RETRY_FIRST, Lifecycle
from anyserve.replica.pool import WorkerPool, WorkerSlot
from anyserve.replica.supervisor import Supervisor, WorkerProcess, WorkerStartError
from anyserve.workers import Worker

CHAT = {"type": "chat"}
CODE = {"type": "code"}


class FakeConnection:
    """Stands in for a running worker process and its transport, which these tests are not about.

    Only what :class:`Lifecycle` reads: the handshake, the load, whether it is closed.
    """

    def __init__(self, offers: list[dict[str, Any]]) -> None:
        self.hello: dict[str, Any] = {"capabilities": offers, "pid": 7}
        self.in_flight = 0
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class FakeSupervisor:
    """Stands in for the supervisor and the worker processes it runs, which these tests are not about.

    ``launch`` adds a slot whose handshake is the class's offers to the pool
    (as the real one does once a worker is ready), after ``gate`` opens if
    one is set, or raises ``WorkerStartError(fail_with)``; ``stop_worker``
    takes the slot out of the pool and closes it; ``crash`` reports an
    unexpected exit the way the real one does.
    """

    def __init__(self, app: AnyServe, pool: WorkerPool) -> None:
        self.app, self.pool = app, pool
        self.on_class_exit: Callable[[WorkerProcess, int | None], None] | None = None
        self.workers: dict[str, WorkerProcess] = {}
        self.gate: asyncio.Event | None = None
        self.fail_with = ""
        self.launched: list[str] = []
        self.stopped: list[str] = []

    def new_worker(self, worker_id: str, worker_class: str | None = None) -> WorkerProcess:
        self.workers[worker_id] = WorkerProcess(worker_id, f"fake://{worker_id}", worker_class=worker_class)
        return self.workers[worker_id]

    async def launch(self, worker: WorkerProcess, timeout: float = 60.0) -> WorkerSlot:
        assert worker.worker_class is not None
        self.launched.append(worker.worker_class)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with:
            raise WorkerStartError(f"worker {worker.id} exited before it was ready:\nTraceback\n{self.fail_with}")
        offers = self.app.worker_class(worker.worker_class).describe()
        slot = WorkerSlot.from_connection(worker.id, FakeConnection(offers), worker_class=worker.worker_class)
        self.pool.add(slot)
        return slot

    async def stop_worker(self, worker: WorkerProcess, grace: float = 10.0) -> None:
        assert worker.worker_class is not None
        self.stopped.append(worker.worker_class)
        slot = self.pool.remove(worker.id)
        if slot is not None:
            await slot.connection.close()

    def crash(self, worker_class: str, code: int) -> None:
        worker = self.workers[f"class-{worker_class}"]
        worker.stderr_tail.append("RuntimeError: out of memory")
        self.pool.remove(worker.id)
        assert self.on_class_exit is not None
        self.on_class_exit(worker, code)


class Chat(Worker):
    def handle(self, request: Any, context: Any) -> None: ...

    def handle_stream(self, request: Any, context: Any, stream: Any) -> None: ...


class Code(Worker):
    def handle(self, request: Any) -> None: ...


class Vision(Worker):
    def handle(self, request: Any) -> None: ...


def app_with(*classes: tuple[type, list[dict[str, Any]], Mapping[str, float], float | None]) -> AnyServe:
    app = AnyServe("classes")
    for cls, capabilities, resources, idle_timeout in classes:
        app.worker(capabilities, resources=resources, idle_timeout=idle_timeout)(cls)
    return app


#: Chat offers two capabilities, each unary and streaming; Code offers one, unary.
DEFAULT_APP = ((Chat, [CHAT, {"type": "chat", "size": "big"}], {}, None), (Code, [CODE], {}, None))
Test = Callable[[Lifecycle, FakeSupervisor], Awaitable[None]]


def run(test: Test, app: AnyServe | None = None, budget: Mapping[str, float] | None = None) -> None:
    """Run ``test`` against a fresh lifecycle in its own event loop, then close it."""
    app = app or app_with(*DEFAULT_APP)

    async def main() -> None:
        pool = WorkerPool(SubsetMatcher(), create_plugin_manager(entrypoints=False, env={}))
        supervisor = FakeSupervisor(app, pool)
        lifecycle = Lifecycle(app, cast(Supervisor, supervisor), pool, SubsetMatcher(), budget or {})
        try:
            await test(lifecycle, supervisor)
        finally:
            await lifecycle.close()

    asyncio.run(main())


async def until(condition: Callable[[], bool], within: float = 1.0) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def states(lifecycle: Lifecycle) -> dict[str, str]:
    return {name: lifecycle.public_state(worker_class) for name, worker_class in lifecycle.classes.items()}


def slot_of(lifecycle: Lifecycle, name: str) -> WorkerSlot:
    return lifecycle.pool.slots[lifecycle.classes[name].worker.id]


def test_a_cold_class_starts_on_the_first_request_which_gets_the_handler_index() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        assert states(lc) == {"Chat": COLD, "Code": COLD}
        assert lc.match(CODE, stream=True) is None  # Code has no streaming handler
        assert lc.match({"size": "big"}, stream=True) is lc.classes["Chat"]

        slot, handler = await lc.acquire({"size": "big"}, stream=True, timeout=1.0)

        assert (slot.worker_class, handler) == ("Chat", 3)  # chat, chat (stream), big, big (stream)
        assert supervisor.launched == ["Chat"] and states(lc) == {"Chat": HOT, "Code": COLD}
        assert [(s.worker, s.action, s.reason) for s in lc.switches] == [
            ("Chat", "start", "request for {'size': 'big'}")
        ]
        assert await lc.acquire(CHAT, stream=False, timeout=1.0) == (slot, 0)  # hot: no second start
        assert supervisor.launched == ["Chat"]
        assert await lc.acquire({"type": "vision"}, stream=False, timeout=1.0) is None

    run(test)


def test_offers_list_every_class_capability_with_its_state() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        await lc.acquire(CODE, stream=False, timeout=1.0)

        assert lc.offers() == [
            {"type": "chat", "state": COLD},
            {"type": "chat", "stream": True, "state": COLD},
            {"type": "chat", "size": "big", "state": COLD},
            {"type": "chat", "size": "big", "stream": True, "state": COLD},
            {"type": "code", "state": HOT},
        ]

    run(test)


def test_concurrent_requests_share_one_start() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        supervisor.gate = asyncio.Event()
        first = asyncio.create_task(lc.acquire(CHAT, stream=False, timeout=1.0))
        second = asyncio.create_task(lc.acquire(CHAT, stream=True, timeout=1.0))
        await asyncio.sleep(0.01)

        assert states(lc)["Chat"] == STARTING and lc.classes["Chat"].waiters == 2
        assert {o["state"] for o in lc.offers() if o["type"] == "chat"} == {STARTING}
        supervisor.gate.set()

        (slot_a, index_a), (slot_b, index_b) = await first, await second
        assert slot_a is slot_b and (index_a, index_b) == (0, 1)
        assert supervisor.launched == ["Chat"] and lc.classes["Chat"].waiters == 0

    run(test)


def test_a_failing_start_is_recorded_and_repeated_failures_mark_the_class_failed() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        supervisor.fail_with = "ImportError: no module named torch"
        chat = lc.classes["Chat"]
        for attempt in range(1, CRASH_LIMIT + 1):
            with pytest.raises(Unavailable, match=r"^worker Chat failed to start: worker class-Chat exited"):
                await lc.acquire(CHAT, stream=False, timeout=1.0)
            assert chat.failures == attempt
            assert chat.last_error == "ImportError: no module named torch"  # the output's last line
            assert states(lc)["Chat"] == (COLD if attempt < CRASH_LIMIT else FAILED)

        assert chat.retry_at == pytest.approx(time.monotonic() + RETRY_FIRST, abs=0.5)
        assert {o["state"] for o in lc.offers() if o["type"] == "chat"} == {FAILED}
        with pytest.raises(Unavailable, match=r"after 3 failed start\(s\) or crashes .* retrying in 5s$"):
            await lc.acquire(CHAT, stream=False, timeout=1.0)
        assert supervisor.launched == ["Chat"] * CRASH_LIMIT  # failed: not even tried

    run(test)


def test_a_failed_class_is_cold_again_at_its_retry_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle_module, "RETRY_FIRST", 0.0)  # retry at once instead of after 5 s

    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        supervisor.fail_with = "boom"
        for _ in range(CRASH_LIMIT):
            with pytest.raises(Unavailable):
                await lc.acquire(CHAT, stream=False, timeout=1.0)
        assert lc.classes["Chat"].state == FAILED and states(lc)["Chat"] == COLD

        supervisor.fail_with = ""
        await lc.acquire(CHAT, stream=False, timeout=1.0)
        assert states(lc)["Chat"] == HOT

    run(test)


def test_a_crash_is_recorded_and_a_restart_scheduled() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        await lc.acquire(CHAT, stream=False, timeout=1.0)

        supervisor.crash("Chat", code=137)

        chat = lc.classes["Chat"]
        assert states(lc)["Chat"] == COLD and chat.failures == 1
        assert chat.last_error == "exited with code 137: RuntimeError: out of memory"
        assert chat.start_task is not None and not chat.start_task.done()  # restarting after a back-off

    run(test)


def test_idle_classes_are_stopped_after_their_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle_module, "REAP_INTERVAL", 0.005)
    app = app_with(
        (Chat, [CHAT], {}, 1.0),
        (Code, [CODE], {}, 1.0),
        (Vision, [{"type": "vision"}], {}, None),  # never stopped for idling
    )

    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        for query in (CHAT, CODE, {"type": "vision"}):
            await lc.acquire(query, stream=False, timeout=1.0)
        long_ago = time.monotonic() - 2.0
        slot_of(lc, "Chat").last_used = long_ago
        slot_of(lc, "Code").last_used = long_ago
        cast(FakeConnection, slot_of(lc, "Code").connection).in_flight = 1  # busy: never idle
        slot_of(lc, "Vision").last_used = long_ago

        lc.start_reaper()
        await until(lambda: bool(supervisor.stopped))
        await asyncio.sleep(0.02)  # a few more passes of the reaper

        assert supervisor.stopped == ["Chat"]
        assert states(lc) == {"Chat": COLD, "Code": HOT, "Vision": HOT}
        assert (lc.switches[-1].worker, lc.switches[-1].action, lc.switches[-1].reason) == (
            "Chat",
            "stop",
            "idle for 1s",
        )
        assert lc.classes["Chat"].worker.id not in lc.pool.slots

    run(test, app)


GPU_APP = (
    (Chat, [CHAT], {"gpus": 1}, None),
    (Code, [CODE], {"gpus": 1}, None),
    (Vision, [{"type": "vision"}], {"gpus": 1}, None),
)


def test_the_budget_evicts_the_idlest_class_to_make_room() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        await lc.acquire(CHAT, stream=False, timeout=1.0)
        await lc.acquire(CODE, stream=False, timeout=1.0)
        slot_of(lc, "Code").last_used = time.monotonic() - 10  # Code is the idlest

        await lc.acquire({"type": "vision"}, stream=False, timeout=1.0)

        assert supervisor.stopped == ["Code"]
        assert states(lc) == {"Chat": HOT, "Code": COLD, "Vision": HOT}
        assert lc.in_use() == {"gpus": 2.0}
        assert lc.switches[-2].reason == "making room for Vision"

    run(test, app_with(*GPU_APP), budget={"gpus": 2})


def test_busy_classes_are_not_evicted_and_the_request_fails_at_its_deadline() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        await lc.acquire(CHAT, stream=False, timeout=1.0)
        cast(FakeConnection, slot_of(lc, "Chat").connection).in_flight = 1

        with pytest.raises(ResourceExhausted, match=r"within the request's deadline \(0.0s\): waiting for room"):
            await lc.acquire(CODE, stream=False, timeout=0.02)
        assert supervisor.stopped == [] and states(lc)["Chat"] == HOT

    run(test, app_with(*GPU_APP), budget={"gpus": 1})


def test_a_class_larger_than_the_budget_is_refused_at_once() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        with pytest.raises(ResourceExhausted, match=r"^worker Chat needs gpus=4 but this replica's budget is gpus=2$"):
            await lc.acquire(CHAT, stream=False, timeout=1.0)
        assert supervisor.launched == []

    run(test, app_with((Chat, [CHAT], {"gpus": 4}, None)), budget={"gpus": 2})


def test_eviction_stops_only_classes_holding_what_the_new_class_needs() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        await lc.acquire(CHAT, stream=False, timeout=1.0)  # cpus only, and the idlest
        await lc.acquire(CODE, stream=False, timeout=1.0)
        slot_of(lc, "Chat").last_used = time.monotonic() - 10

        await lc.acquire({"type": "vision"}, stream=False, timeout=1.0)  # needs the GPU Code holds

        assert supervisor.stopped == ["Code"]
        assert states(lc)["Chat"] == HOT

    app = app_with(
        (Chat, [CHAT], {"cpus": 1}, None),
        (Code, [CODE], {"gpus": 1}, None),
        (Vision, [{"type": "vision"}], {"gpus": 1}, None),
    )
    run(test, app, budget={"gpus": 1, "cpus": 1})


def test_a_request_during_a_stop_waits_for_the_stop_and_leaves_the_class_hot() -> None:
    async def test(lc: Lifecycle, supervisor: FakeSupervisor) -> None:
        await lc.acquire(CHAT, stream=False, timeout=1.0)
        stop_may_end = asyncio.Event()
        stop_worker = supervisor.stop_worker

        async def slow_stop(worker: WorkerProcess, grace: float = 10.0) -> None:
            await stop_worker(worker, grace)
            await stop_may_end.wait()  # on_cleanup() is running in the worker

        supervisor.stop_worker = slow_stop  # type: ignore[method-assign]
        stopping = asyncio.create_task(lc.stop(lc.classes["Chat"], reason="idle"))
        await asyncio.sleep(0)
        request = asyncio.create_task(lc.acquire(CHAT, stream=False, timeout=1.0))
        await asyncio.sleep(0.01)
        stop_may_end.set()
        await stopping
        slot, _ = await request

        assert supervisor.launched == ["Chat", "Chat"]
        assert states(lc)["Chat"] == HOT and lc.pool.slots.get(slot.id) is slot

    run(test)


def test_the_router_is_told_when_a_failed_class_is_cold_again() -> None:
    """Its state changes by the clock alone: the replica registers again then, so the router routes to it again."""

    async def main() -> None:
        app = app_with(*DEFAULT_APP)
        pool = WorkerPool(SubsetMatcher(), create_plugin_manager(entrypoints=False, env={}))
        supervisor = FakeSupervisor(app, pool)
        told: list[str] = []
        lc = Lifecycle(
            app, cast(Supervisor, supervisor), pool, SubsetMatcher(), {}, on_change=lambda: told.append(
                states(lc)["Chat"]
            ), failed_retry=0.1,
        )  # fmt: skip
        supervisor.fail_with = "boom"
        for _ in range(CRASH_LIMIT):
            with pytest.raises(Unavailable):
                await lc.acquire(CHAT, stream=False, timeout=1.0)
        assert told[-1] == FAILED
        await until(lambda: told[-1] == COLD)
        assert told[-1] == COLD
        await lc.close()

    asyncio.run(main())
