"""Worker classes on demand: start when needed, stop when idle, fit a resource budget.

Each worker class is a *group* with a state:

``cold``      not running; the first request for it starts it
``starting``  its process is up and ``on_start`` is running; requests wait
``hot``       serving
``stopping``  being stopped (idle, evicted, shutdown); ``on_cleanup`` runs
``failed``    crashed repeatedly; unavailable until ``retry_at``, then cold again

Concurrent requests for a cold group share one start. Starting a group that
does not fit the replica's budget (``--resources gpus=4``) first stops the
least recently used idle groups; when nothing can be freed the request waits
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
from anyserve.errors import ResourceExhausted, Unavailable
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
class Group:
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
    ) -> None:
        self.pool = pool
        self.supervisor = supervisor
        self.matcher = matcher
        self.budget = dict(budget)
        self.on_change = on_change
        self.groups = {spec.name: Group(spec, supervisor.new_worker(f"class-{spec.name}", spec.name))
                       for spec in app.worker_classes}  # fmt: skip
        self.switches: collections.deque[Switch] = collections.deque(maxlen=50)
        self._freed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        supervisor.on_group_exit = self._crashed

    # -- what the replica offers -------------------------------------------------

    def offers(self) -> list[dict[str, Any]]:
        """Every capability of every worker class, with its group's state."""
        return [{**offer, "state": self.public_state(g)} for g in self.groups.values() for offer in g.spec.describe()]

    def public_state(self, group: Group) -> str:
        if group.state == FAILED and time.monotonic() >= group.retry_at:
            return COLD  # it will be tried again on the next request
        return group.state

    def _slot(self, group: Group) -> WorkerSlot | None:
        return self.pool.slots.get(group.worker.id)

    def in_use(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for group in self.groups.values():
            if group.state in (STARTING, HOT, STOPPING):
                for key, amount in group.spec.resources.items():
                    used[key] = used.get(key, 0.0) + amount
        return used

    def _fits(self, spec: WorkerClass) -> bool:
        used = self.in_use()
        return all(used.get(k, 0.0) + v <= self.budget[k] for k, v in spec.resources.items() if k in self.budget)

    def _check_budget(self, spec: WorkerClass) -> None:
        for key, amount in spec.resources.items():
            if key in self.budget and amount > self.budget[key]:
                raise ResourceExhausted(
                    f"worker {spec.name} needs {key}={amount:g} but this replica's budget is {key}={self.budget[key]:g}"
                )

    # -- serving a request ----------------------------------------------------------

    def _best(self, query: Query, stream: bool) -> tuple[Group, Capability] | None:
        best: tuple[float, Group, Capability] | None = None
        for group in self.groups.values():
            if (stream and not group.spec.streaming) or (not stream and not group.spec.unary):
                continue
            for cap in group.spec.capabilities:
                score = self.matcher.score(cap, query)
                if score is not None and (best is None or score > best[0]):
                    best = (score, group, cap)
        return (best[1], best[2]) if best else None

    def match(self, query: Query, *, stream: bool) -> Group | None:
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
        group, capability = found
        slot = await self._hot_slot(group, query, timeout)
        return slot, slot.handler(capability, stream)

    async def _hot_slot(self, group: Group, query: Query, timeout: float | None) -> WorkerSlot:
        slot = self._slot(group)
        if group.state == HOT:
            if slot is not None and not slot.connection.closed:
                return slot
            await self._crash_reported(group)
        if group.state == FAILED and time.monotonic() < group.retry_at:
            raise Unavailable(
                f"worker {group.name} is unavailable after {group.failures} failed start(s) or crashes "
                f"(last error: {group.last_error}); retrying in {group.retry_at - time.monotonic():.0f}s"
            )
        self._check_budget(group.spec)
        if group.waiters >= MAX_WAITERS:
            raise ResourceExhausted(f"{MAX_WAITERS} requests are already waiting for worker {group.name} to start")
        group.waiters += 1
        try:
            if group.start_task is None or group.start_task.done():
                group.start_task = asyncio.create_task(self._start(group, reason=f"request for {dict(query)}"))
            return await asyncio.wait_for(asyncio.shield(group.start_task), timeout)
        except TimeoutError:
            waiting_for = "room in the resource budget" if group.state == COLD else "on_start() to finish"
            raise ResourceExhausted(
                f"worker {group.name} was not ready within the request's deadline ({timeout:.1f}s): "
                f"waiting for {waiting_for}; budget {self.budget or 'unlimited'}, in use {self.in_use()}"
            ) from None
        finally:
            group.waiters -= 1

    async def _crash_reported(self, group: Group, limit: float = 5.0) -> None:
        """A hot worker's connection just closed: wait for the supervisor to report the exit."""
        deadline = time.monotonic() + limit
        while group.state == HOT and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def _start(self, group: Group, reason: str) -> WorkerSlot:
        await group.stopped.wait()  # a request that arrived while the class was stopping starts it afterwards
        await self._make_room(group)
        group.state = STARTING
        self.on_change()
        began = time.monotonic()
        try:
            slot = await self.supervisor.launch(group.worker, timeout=group.spec.start_timeout)
        except WorkerStartError as exc:
            self._record_failure(group, exc.message)
            raise Unavailable(f"worker {group.name} failed to start: {exc.message}") from None
        group.state = HOT
        slot.last_used = time.monotonic()
        self._switch(group, "start", time.monotonic() - began, reason)
        return slot

    async def _make_room(self, group: Group) -> None:
        while not self._fits(group.spec):
            victim = self._idlest(exclude=group, needs=self._short_of(group.spec))
            if victim is not None:
                await self.stop(victim, reason=f"making room for {group.name}")
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

    def _idlest(self, exclude: Group, needs: set[str]) -> Group | None:
        """The idle class used longest ago among those holding something of ``needs``: stopping others frees nothing."""
        idle = [
            (slot.last_used, g)
            for g in self.groups.values()
            if g is not exclude and g.state == HOT and needs & {k for k, v in g.spec.resources.items() if v > 0}
            and (slot := self._slot(g)) is not None and slot.connection.in_flight == 0
        ]  # fmt: skip
        return min(idle, key=lambda pair: pair[0])[1] if idle else None

    async def stop(self, group: Group, reason: str) -> None:
        if group.state != HOT:
            return
        group.state = STOPPING
        group.stopped.clear()
        self.on_change()
        began = time.monotonic()
        try:
            await self.supervisor.stop_worker(group.worker)
        finally:
            group.state = COLD
            group.stopped.set()
        self._switch(group, "stop", time.monotonic() - began, reason)
        self._freed.set()

    def _switch(self, group: Group, action: str, seconds: float, reason: str) -> None:
        self.switches.append(Switch(time.time(), group.name, action, seconds, reason))
        log.info(
            "worker %s %s in %.2fs (%s)", group.name, "started" if action == "start" else "stopped", seconds, reason
        )
        self.on_change()

    # -- failures ------------------------------------------------------------------

    def _record_failure(self, group: Group, error: str) -> None:
        now = time.monotonic()
        group.crashes.append(now)
        group.failures += 1
        group.last_error = error.strip().splitlines()[-1] if error.strip() else "unknown error"
        recent = [t for t in group.crashes if now - t < CRASH_WINDOW]
        if len(recent) >= CRASH_LIMIT:
            delay = min(RETRY_FIRST * 2 ** (group.failures - CRASH_LIMIT), RETRY_MAX)
            group.state, group.retry_at = FAILED, now + delay
            log.error("worker %s failed %d times in %.0fs; unavailable for %.0fs: %s",
                      group.name, len(recent), CRASH_WINDOW, delay, group.last_error)  # fmt: skip
        else:
            group.state = COLD
        self._freed.set()
        self.on_change()

    def _crashed(self, worker: WorkerProcess, code: int | None) -> None:
        group = next(g for g in self.groups.values() if g.worker is worker)
        self._record_failure(group, f"exited with code {code}: {worker.last_output()}")
        if group.state == COLD and (group.start_task is None or group.start_task.done()):
            # Restart with back-off so the capability is hot again before the next request.
            delay = min(0.2 * 2 ** (len(group.crashes) - 1), 10.0)
            group.start_task = asyncio.create_task(self._restart(group, delay))

    async def _restart(self, group: Group, delay: float) -> WorkerSlot:
        await asyncio.sleep(delay)
        return await self._start(group, reason="restart after a crash")

    # -- idle stop -----------------------------------------------------------------

    def start_reaper(self) -> None:
        if self.groups:
            self._reaper = asyncio.create_task(self._reap(), name="idle-reaper")

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for group in list(self.groups.values()):
                slot = self._slot(group)
                timeout = group.spec.idle_timeout
                if group.state == HOT and timeout is not None and slot is not None and slot.connection.in_flight == 0 \
                        and now - slot.last_used > timeout:  # fmt: skip
                    await self.stop(group, reason=f"idle for {timeout:g}s")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for group in self.groups.values():
            if group.start_task is not None and not group.start_task.done():
                group.start_task.cancel()

    # -- status ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        groups = []
        for group in self.groups.values():
            slot = self._slot(group)
            groups.append({
                "worker": group.name,
                "state": self.public_state(group),
                "capabilities": [c.to_dict() for c in group.spec.capabilities],
                "resources": dict(group.spec.resources),
                "idle_timeout": group.spec.idle_timeout,
                "in_flight": slot.connection.in_flight if slot else 0,
                "pid": slot.pid if slot else None,
                "waiting": group.waiters,
                "last_error": group.last_error or None,
            })  # fmt: skip
        return {
            "worker_classes": groups,
            "resources": {"budget": self.budget, "in_use": self.in_use()},
            "switches": [s.to_dict() for s in self.switches],
        }
