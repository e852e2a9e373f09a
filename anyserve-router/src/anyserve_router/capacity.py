"""Telling "not now" from "nobody": which capabilities are on their way, and waiting for them.

A request no live replica can take right now gets a 404 only when nothing
suggests one will: no live replica offers the capability (a ``failed``
offer still counts: it comes back), no replica that went silent within
``router.offer_memory_seconds`` offered it, and the router is not in its
first moments after a start, when replicas it does not know yet are still
re-registering (they heartbeat every ``heartbeat_interval``, and the
first heartbeat a restarted router does not recognise makes them register
again). Otherwise the request waits up to ``router.capacity_wait_seconds``
(and never past its deadline) for the registry to change, is routed if a
replica turned up, and is answered 503 with ``Retry-After`` if none did.

Waiting is off the hot path: one task per router polls the registry's
version while requests wait, and wakes them all when it moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from anyserve.candidates import FAILED
from anyserve.config import RouterSettings
from anyserve.matching import Matcher
from anyserve_router.offers import Offer
from anyserve_router.registry import ReplicaRegistry

#: Seconds between two looks at the registry's version while requests wait.
POLL = 0.02
#: How many heartbeat intervals after its start a router gives replicas to re-register before a 404.
STARTUP_HEARTBEATS = 2.0


def heartbeat_interval(settings: RouterSettings) -> float:
    """How often the router asks replicas to heartbeat: ``heartbeat_seconds``, or ttl/3 if that is less."""
    return min(settings.heartbeat_seconds, settings.ttl_seconds / 3)


def startup_grace(settings: RouterSettings) -> float:
    """Seconds after a start in which any capability may still be on its way (replicas re-registering)."""
    return STARTUP_HEARTBEATS * heartbeat_interval(settings)


def _matches(offer: Offer, query: Mapping[str, Any], matcher: Matcher, stream: bool | None) -> bool:
    if stream is not None and offer.runtime.get("stream", False) != stream:
        return False
    return matcher.score(offer.capability, query) is not None


class Capacity:
    """What a router knows of capacity on its way, and the one wait for the registry to change."""

    def __init__(
        self,
        registry: ReplicaRegistry,
        matcher: Matcher,
        *,
        wait_seconds: float = 0.0,
        grace_seconds: float = 0.0,
    ) -> None:
        self.registry = registry
        self.matcher = matcher
        self.wait_seconds = wait_seconds
        self.grace_until = time.monotonic() + grace_seconds
        self._waiting = 0
        self._changed: asyncio.Event | None = None

    def expected(
        self,
        query: Mapping[str, Any],
        *,
        stream: bool | None,
        exclude: Iterable[str],
        protocols: frozenset[str] | None,
    ) -> tuple[str, float] | None:
        """Why a replica for ``query`` may come, and until when that holds; ``None`` when nothing says so."""
        now = time.monotonic()
        _, live = self.registry.live_entries(exclude, now)
        for replica_id, where, offers, *_ in live:
            if protocols is not None and where["protocol"] not in protocols:
                continue
            for offer in offers:
                if offer.state == FAILED and _matches(offer, query, self.matcher, stream):
                    return f"replica {replica_id} offers it but reports it failed until its retry", float("inf")
        skip = set(exclude)
        for replica_id, gone_at, offers in self.registry.recent_offers(now):
            if replica_id not in skip and any(_matches(o, query, self.matcher, stream) for o in offers):
                return f"replica {replica_id}, which offered it, went silent {now - gone_at:.0f}s ago", float("inf")
        if now < self.grace_until:
            return "the router has just started and replicas are still registering", self.grace_until
        return None

    async def changed(self, version: int, until: float) -> bool:
        """Wait until the registry's version is no longer ``version`` (True) or ``until`` passes (False)."""
        self._waiting += 1
        try:
            while self.registry.version == version:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event().wait(), remaining)
            return True
        finally:
            self._waiting -= 1

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
            asyncio.get_running_loop().create_task(self._poll(), name="anyserve-router-capacity")
        return self._changed

    async def _poll(self) -> None:
        """Wake the waiters whenever the registry's version moves; ends when nobody waits."""
        seen = self.registry.version
        try:
            while self._waiting > 0:
                await asyncio.sleep(POLL)
                if self.registry.version != seen:
                    seen = self.registry.version
                    event, self._changed = self._changed, asyncio.Event()
                    if event is not None:
                        event.set()
        finally:
            event, self._changed = self._changed, None
            if event is not None:
                event.set()
