"""Worker classes on demand: start when needed, stop when idle, fit a resource budget.

Each worker class has a state, kept in its :class:`ClassState`:

``cold``      not running; the first request for it starts it
``starting``  its process is up and ``on_start`` is running; requests wait
``hot``       serving
``stopping``  being stopped (idle, evicted, shutdown); ``on_cleanup`` runs
``failed``    crashed repeatedly; unavailable until ``retry_at``, then cold again
              (and the router is told so then); also a hot class whose worker
              leaves liveness probes unanswered, until it answers

Concurrent requests for a cold class share one start. Starting a class that
does not fit the replica's budget (``--resources gpus=4``) first stops the
least recently used idle classes; when nothing can be freed the request waits
until something can, or fails with RESOURCE_EXHAUSTED at its deadline.
Every start and stop is recorded as a *switch* with its cost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from anyserve.app import AnyServe
from anyserve.candidates import COLD, FAILED, HOT, STARTING, STOPPING
from anyserve.capability import Capability
from anyserve.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from anyserve.matching import Matcher
from anyserve.replica.pool import WorkerPool, WorkerSlot
from anyserve.replica.supervisor import Supervisor, WorkerProcess, WorkerStartError
from anyserve.transport import Query
from anyserve.workers import WorkerClass

log = logging.getLogger("anyserve.lifecycle")

MAX_WAITERS = 1024
CRASH_WINDOW = 60.0
CRASH_LIMIT = 3
RETRY_FIRST = 5.0
RETRY_MAX = 300.0
REAP_INTERVAL = 0.5


@dataclass
class Switch:
    """One start or stop of a worker class, kept for ``anyserve status``."""

    at: float
    worker: str
    action: str  # "start" or "stop"
    seconds: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "worker": self.worker, "action": self.action, "seconds": round(self.seconds, 3),
                "reason": self.reason}  # fmt: skip


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class ClassState:
    """One worker class at run time: its declaration, its worker process, its state and failure record."""

    spec: WorkerClass
    worker: WorkerProcess
    state: str = COLD
    start_task: asyncio.Task[WorkerSlot] | None = None
    waiters: int = 0
    crashes: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=CRASH_LIMIT))
    failures: int = 0
    last_error: str = ""
    retry_at: float = 0.0
    #: Clear while a stop is in progress: a start waits for it, as the stop still owns the worker process.
    stopped: asyncio.Event = field(default_factory=_set_event)
    #: Seconds its last start took, cold to hot (the router weighs starting it against queueing elsewhere).
    load_seconds: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name


class Lifecycle:
    def __init__(
        self,
        app: AnyServe,
        supervisor: Supervisor,
        pool: WorkerPool,
        matcher: Matcher,
        budget: Mapping[str, float],
        on_change: Callable[[], None] = lambda: None,
        failed_retry: float | None = None,
    ) -> None:
        self.pool = pool
        self.supervisor = supervisor
        self.matcher = matcher
        self.budget = dict(budget)
        self.on_change = on_change
        #: Seconds a class that keeps failing stays failed, doubling after (``replica.failed_retry_seconds``).
        self.failed_retry = RETRY_FIRST if failed_retry is None else failed_retry
        self.classes = {spec.name: ClassState(spec, supervisor.new_worker(f"class-{spec.name}", spec.name))
                       for spec in app.worker_classes}  # fmt: skip
        self.switches: collections.deque[Switch] = collections.deque(maxlen=50)
        #: Told of every switch: (worker class, "start" or "stop", seconds); the replica's metrics.
        self.on_switch: Callable[[str, str, float], None] | None = None
        self._freed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        supervisor.on_class_exit = self._crashed

    # -- what the replica offers -------------------------------------------------

    def offers(self) -> list[dict[str, Any]]:
        """Every capability of every worker class, with its class's state."""
        return [{**offer, "state": self.public_state(c)} for c in self.classes.values() for offer in c.spec.describe()]

    def public_state(self, worker_class: ClassState) -> str:
        if worker_class.state == FAILED and time.monotonic() >= worker_class.retry_at:
            return COLD  # it will be tried again on the next request
        if worker_class.state == HOT and (slot := self.slot_of(worker_class)) is not None and not slot.responsive:
            return FAILED  # hot, but its worker does not answer: routed nowhere until it does
        return worker_class.state

    def slot_of(self, worker_class: ClassState) -> WorkerSlot | None:
        return self.pool.slots.get(worker_class.worker.id)

    def in_use(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for worker_class in self.classes.values():
            if worker_class.state in (STARTING, HOT, STOPPING):
                for key, amount in worker_class.spec.resources.items():
                    used[key] = used.get(key, 0.0) + amount
        return used

    def fits(self, spec: WorkerClass) -> bool:
        """Whether ``spec`` can start now without stopping another class (what the router is told as ``fits``)."""
        used = self.in_use()
        return all(used.get(k, 0.0) + v <= self.budget[k] for k, v in spec.resources.items() if k in self.budget)

    def _check_budget(self, spec: WorkerClass) -> None:
        for key, amount in spec.resources.items():
            if key in self.budget and amount > self.budget[key]:
                raise ResourceExhausted(
                    f"worker {spec.name} needs {key}={amount:g} but this replica's budget is {key}={self.budget[key]:g}"
                )

    # -- serving a request ----------------------------------------------------------

    def _best(self, query: Query, stream: bool) -> tuple[ClassState, Capability] | None:
        best: tuple[float, ClassState, Capability] | None = None
        for worker_class in self.classes.values():
            if (stream and not worker_class.spec.streaming) or (not stream and not worker_class.spec.unary):
                continue
            for cap in worker_class.spec.capabilities:
                score = self.matcher.score(cap, query)
                if score is not None and (best is None or score > best[0]):
                    best = (score, worker_class, cap)
        return (best[1], best[2]) if best else None

    def match(self, query: Query, *, stream: bool) -> ClassState | None:
        """The worker class that would serve ``query``, running or not."""
        found = self._best(query, stream)
        return found[0] if found else None

    async def acquire(self, query: Query, *, stream: bool, timeout: float | None) -> tuple[WorkerSlot, int] | None:
        """A hot worker for ``query`` and its handler's index, starting its class if needed.

        None if no class offers ``query``.
        """
        found = self._best(query, stream)
        if found is None:
            return None
        worker_class, capability = found
        slot = await self._hot_slot(worker_class, query, timeout)
        return slot, slot.handler(capability, stream)

    async def _hot_slot(self, worker_class: ClassState, query: Query, timeout: float | None) -> WorkerSlot:
        slot = self.slot_of(worker_class)
        if worker_class.state == HOT:
            if slot is not None and not slot.connection.closed:
                return slot
            await self._crash_reported(worker_class)
        if worker_class.state == FAILED and time.monotonic() < worker_class.retry_at:
            raise Unavailable(
                f"worker {worker_class.name} is unavailable after {worker_class.failures} failed start(s) or crashes "
                f"(last error: {worker_class.last_error}); retrying in {worker_class.retry_at - time.monotonic():.0f}s"
            )
        self._check_budget(worker_class.spec)
        if worker_class.waiters >= MAX_WAITERS:
            raise ResourceExhausted(
                f"{MAX_WAITERS} requests are already waiting for worker {worker_class.name} to start"
            )
        worker_class.waiters += 1
        try:
            if worker_class.start_task is None or worker_class.start_task.done():
                worker_class.start_task = asyncio.create_task(
                    self._start(worker_class, reason=f"request for {dict(query)}")
                )
            return await asyncio.wait_for(asyncio.shield(worker_class.start_task), timeout)
        except TimeoutError:
            if worker_class.state == STARTING:
                raise DeadlineExceeded(
                    f"worker {worker_class.name} was not ready within the request's deadline ({timeout:.1f}s): "
                    "its on_start() is still running; it keeps starting, so a retry may find it ready"
                ) from None
            waiting_for = "room in the resource budget" if worker_class.state == COLD else "on_start() to finish"
            raise ResourceExhausted(
                f"worker {worker_class.name} was not ready within the request's deadline ({timeout:.1f}s): "
                f"waiting for {waiting_for}; budget {self.budget or 'unlimited'}, in use {self.in_use()}"
            ) from None
        finally:
            worker_class.waiters -= 1

    async def _crash_reported(self, worker_class: ClassState, limit: float = 5.0) -> None:
        """A hot worker's connection just closed: wait for the supervisor to report the exit."""
        deadline = time.monotonic() + limit
        while worker_class.state == HOT and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def _start(self, worker_class: ClassState, reason: str) -> WorkerSlot:
        await worker_class.stopped.wait()  # a request that arrived while the class was stopping starts it afterwards
        await self._make_room(worker_class)
        worker_class.state = STARTING
        self.on_change()
        began = time.monotonic()
        try:
            slot = await self.supervisor.launch(worker_class.worker, timeout=worker_class.spec.start_timeout)
        except WorkerStartError as exc:
            self._record_failure(worker_class, exc.message)
            raise Unavailable(f"worker {worker_class.name} failed to start: {exc.message}") from None
        worker_class.state = HOT
        slot.last_used = time.monotonic()
        worker_class.load_seconds = slot.last_used - began
        self._switch(worker_class, "start", worker_class.load_seconds, reason)
        return slot

    async def _make_room(self, worker_class: ClassState) -> None:
        while not self.fits(worker_class.spec):
            victim = self._idlest(exclude=worker_class, needs=self._short_of(worker_class.spec))
            if victim is not None:
                await self.stop(victim, reason=f"making room for {worker_class.name}")
                continue
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), REAP_INTERVAL)  # re-check: a worker may have gone idle

    def _short_of(self, spec: WorkerClass) -> set[str]:
        """The budgeted resources ``spec`` needs more of than is free now."""
        used = self.in_use()
        return {
            k for k, v in spec.resources.items() if k in self.budget and v > 0 and used.get(k, 0.0) + v > self.budget[k]
        }

    def _idlest(self, exclude: ClassState, needs: set[str]) -> ClassState | None:
        """The idle class used longest ago among those holding something of ``needs``: stopping others frees nothing."""
        idle = [
            (slot.last_used, c)
            for c in self.classes.values()
            if c is not exclude and c.state == HOT and needs & {k for k, v in c.spec.resources.items() if v > 0}
            and (slot := self.slot_of(c)) is not None and slot.connection.in_flight == 0
        ]  # fmt: skip
        return min(idle, key=lambda pair: pair[0])[1] if idle else None

    async def stop(self, worker_class: ClassState, reason: str) -> None:
        if worker_class.state != HOT:
            return
        worker_class.state = STOPPING
        worker_class.stopped.clear()
        self.on_change()
        began = time.monotonic()
        try:
            await self.supervisor.stop_worker(worker_class.worker)
        finally:
            worker_class.state = COLD
            worker_class.stopped.set()
        self._switch(worker_class, "stop", time.monotonic() - began, reason)
        self._freed.set()

    def _switch(self, worker_class: ClassState, action: str, seconds: float, reason: str) -> None:
        self.switches.append(Switch(time.time(), worker_class.name, action, seconds, reason))
        if self.on_switch is not None:
            self.on_switch(worker_class.name, action, seconds)
        log.info(
            "worker %s %s in %.2fs (%s)",
            worker_class.name,
            "started" if action == "start" else "stopped",
            seconds,
            reason,
        )
        self.on_change()

    # -- failures ------------------------------------------------------------------

    def _record_failure(self, worker_class: ClassState, error: str) -> None:
        now = time.monotonic()
        worker_class.crashes.append(now)
        worker_class.failures += 1
        worker_class.last_error = error.strip().splitlines()[-1] if error.strip() else "unknown error"
        recent = [t for t in worker_class.crashes if now - t < CRASH_WINDOW]
        if len(recent) >= CRASH_LIMIT:
            delay = min(self.failed_retry * 2 ** (worker_class.failures - CRASH_LIMIT), RETRY_MAX)
            worker_class.state, worker_class.retry_at = FAILED, now + delay
            log.error("worker %s failed %d times in %.0fs; unavailable for %.0fs: %s",
                      worker_class.name, len(recent), CRASH_WINDOW, delay, worker_class.last_error)  # fmt: skip
            # Cold again at retry_at: say so then, or the router would keep it failed until something else changed.
            asyncio.get_running_loop().call_later(delay + 0.05, self.on_change)  # timers may fire a hair early
        else:
            worker_class.state = COLD
        self._freed.set()
        self.on_change()

    def _crashed(self, worker: WorkerProcess, code: int | None) -> None:
        worker_class = next(c for c in self.classes.values() if c.worker is worker)
        self._record_failure(worker_class, f"exited with code {code}: {worker.last_output()}")
        if worker_class.state == COLD and (worker_class.start_task is None or worker_class.start_task.done()):
            # Restart with back-off so the capability is hot again before the next request.
            delay = min(0.2 * 2 ** (len(worker_class.crashes) - 1), 10.0)
            worker_class.start_task = asyncio.create_task(self._restart(worker_class, delay))

    async def _restart(self, worker_class: ClassState, delay: float) -> WorkerSlot:
        await asyncio.sleep(delay)
        return await self._start(worker_class, reason="restart after a crash")

    # -- idle stop -----------------------------------------------------------------

    def start_reaper(self) -> None:
        if self.classes:
            self._reaper = asyncio.create_task(self._reap(), name="idle-reaper")

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for worker_class in list(self.classes.values()):
                slot = self.slot_of(worker_class)
                timeout = worker_class.spec.idle_timeout
                if worker_class.state == HOT and timeout is not None and slot is not None \
                        and slot.connection.in_flight == 0 and now - slot.last_used > timeout:  # fmt: skip
                    await self.stop(worker_class, reason=f"idle for {timeout:g}s")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for worker_class in self.classes.values():
            if worker_class.start_task is not None and not worker_class.start_task.done():
                worker_class.start_task.cancel()

    # -- status ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        classes = []
        for worker_class in self.classes.values():
            slot = self.slot_of(worker_class)
            classes.append({
                "worker": worker_class.name,
                "state": self.public_state(worker_class),
                "capabilities": [c.to_dict() for c in worker_class.spec.capabilities],
                "resources": dict(worker_class.spec.resources),
                "idle_timeout": worker_class.spec.idle_timeout,
                "in_flight": slot.connection.in_flight if slot else 0,
                "pid": slot.pid if slot else None,
                "waiting": worker_class.waiters,
                "last_error": worker_class.last_error or None,
            })  # fmt: skip
        return {
            "worker_classes": classes,
            "resources": {"budget": self.budget, "in_use": self.in_use()},
            "switches": [s.to_dict() for s in self.switches],
        }
