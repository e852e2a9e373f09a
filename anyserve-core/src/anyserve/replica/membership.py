"""Keeping a replica registered with its router (``--api-server``).

Registers once the replica is ready, heartbeats every ``heartbeat_seconds``
the router asks for (with the replica's in-flight count and load report,
see :mod:`anyserve.replica.load_report`), registers again by
itself when the router forgot it (a restart answers 404 to a heartbeat), keeps
retrying with back-off while the router is unreachable, and deregisters on a
clean shutdown. The replica serves direct clients all the while.

A restarted router hears from every replica within one heartbeat interval
(a second by default, ``router.heartbeat_seconds``): the first heartbeat it
does not recognise makes the replica register at once, and while the router
is down the replica tries again at least every :data:`RETRY_MAX` seconds.
The router keeps requests for capabilities it does not know yet waiting for
that long after its start, so they are served rather than answered 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from anyserve.errors import AnyServeError
from anyserve.router_client import AsyncRouterClient

log = logging.getLogger("anyserve.registration")

RETRY_FIRST = 0.25
#: Longest pause between two tries while the router is unreachable: it must hear from us soon after it is back.
RETRY_MAX = 1.0


class Registration:
    def __init__(
        self,
        client: AsyncRouterClient,
        replica_id: str,
        endpoint: str,
        offers: Callable[[], list[dict[str, Any]]],
        in_flight: Callable[[], int],
        status: Callable[[], dict[str, Any]] | None = None,
        link: str | None = None,
        signals: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self.replica_id = replica_id
        self.endpoint = endpoint
        self.link = link
        self.offers = offers
        self.in_flight = in_flight
        self.status = status
        #: The load report each heartbeat carries, made once per heartbeat.
        self.signals = signals
        self.registered = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registration")

    def refresh(self) -> None:
        """What this replica offers changed (a worker started or stopped): register again now."""
        self._changed.set()

    async def _register(self) -> float:
        self._changed.clear()
        status = self.status() if self.status else None
        answer = await self.client.register(
            self.replica_id, self.endpoint, self.offers(), status=status, link=self.link
        )
        self.registered.set()
        log.info("registered %s at %s with %s", self.replica_id, self.client.url, self.endpoint)
        return float(answer.get("heartbeat_seconds", 5.0))

    async def _run(self) -> None:
        retry = RETRY_FIRST
        interval: float | None = None
        warned = False
        while True:
            try:
                if interval is None:
                    interval = await self._register()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), interval)
                if self._changed.is_set():
                    interval = None
                    continue
                signals = self.signals() if self.signals else None
                if not await self.client.heartbeat(self.replica_id, self.in_flight(), signals):
                    log.warning("router %s forgot replica %s; registering again", self.client.url, self.replica_id)
                    self.registered.clear()
                    interval = None
                retry, warned = RETRY_FIRST, False
            except AnyServeError as exc:
                if not warned:
                    log.warning("cannot reach router: %s (retrying every %gs at most)", exc.message, RETRY_MAX)
                    warned = True
                self.registered.clear()
                interval = None
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.registered.is_set():
            with contextlib.suppress(AnyServeError, TimeoutError):
                await asyncio.wait_for(self.client.deregister(self.replica_id), 2.0)
                log.info("deregistered %s", self.replica_id)
        await self.client.aclose()
