"""Liveness probes: a worker whose event loop stops answering is taken out of routing until it answers again.

A worker process that is stopped (SIGSTOP), wedged in a blocking call on
its event loop or starved keeps its socket open, so nothing else notices:
requests sent to it would wait until their deadline. Every
``replica.liveness_interval_seconds`` each worker gets a probe, an
ordinary request frame flagged ``x-anyserve-probe`` that its event loop
answers without running a handler (so a worker busy in its handler
threads still answers). One left unanswered for
``replica.liveness_timeout_seconds`` marks the worker unresponsive: it gets
no new requests, ``anyserve status`` shows ``"responsive": false``, its
capabilities' health is NOT_SERVING and the router is told they are
``failed``. The next probe it answers puts it back. The worker is not
killed: a stopped process may be continued, and one that is only slow
finishes what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from anyserve.errors import AnyServeError
from anyserve.protocol import names
from anyserve.replica.pool import WorkerPool, WorkerSlot

log = logging.getLogger("anyserve.liveness")

#: The frame map of a probe.
PROBE = {names.PROBE_KEY: "1"}


class Liveness:
    """Probes every worker of ``pool`` every ``interval`` seconds (0: never), each probe allowed ``timeout``."""

    def __init__(self, pool: WorkerPool, interval: float, timeout: float) -> None:
        self.pool = pool
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._probing: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="anyserve-liveness")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._probing.values()) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for slot in list(self.pool.slots.values()):
                if slot.id not in self._probing and not slot.connection.closed:
                    task = asyncio.create_task(self.probe(slot), name=f"anyserve-probe-{slot.id}")
                    self._probing[slot.id] = task
                    task.add_done_callback(lambda _, worker_id=slot.id: self._probing.pop(worker_id, None))

    async def probe(self, slot: WorkerSlot) -> bool:
        """Send one probe; the worker's verdict (True: it answered), also recorded in the pool."""
        try:
            await asyncio.wait_for(slot.connection.infer(b"", PROBE), self.timeout)
        except TimeoutError:
            answered = False
        except AnyServeError:  # an answer all the same, unless the connection closed (the supervisor sees that)
            if slot.connection.closed:
                return False
            answered = True
        else:
            answered = True
        if answered != slot.responsive:
            if answered:
                log.warning("worker %s (pid %s) answers again; it serves requests again", slot.id, slot.pid)
            else:
                log.warning(
                    "worker %s (pid %s) left a liveness probe unanswered for %.1fs; no requests until it answers",
                    slot.id,
                    slot.pid,
                    self.timeout,
                )
        self.pool.set_responsive(slot, answered)
        return answered
