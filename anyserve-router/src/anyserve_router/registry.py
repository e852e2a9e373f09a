"""The router's in-memory replica registry: who serves what, and who is alive.

Replicas ``register`` their endpoint and capabilities, ``heartbeat`` every
few seconds, and are forgotten once silent for longer than ``ttl_seconds``.
Choosing among them is :mod:`anyserve_router.selection`'s job; this module
only keeps the entries, their liveness and their load.

Concurrency: the registry is **thread-safe** and safe to call directly from
an asyncio event loop. Every method is synchronous and holds one
``threading.Lock`` only for a few dictionary operations (never across I/O,
an ``await`` or plugin code), so it neither blocks the loop noticeably nor
needs the loop; this keeps it usable from uvicorn's loop, from worker
threads and from plain tests alike. Matchers and routing hooks, which are
plugin code and may be slow, run on a snapshot taken under the lock.

Time: liveness uses a monotonic ``clock`` (``time.monotonic``), so wall-clock
jumps never expire healthy replicas; ``registered_at`` uses ``wall_clock``
(``time.time``) because people read it. Every time-dependent method takes an
optional ``now`` (a reading of ``clock``), and both clocks are constructor
arguments, so expiry is tested without sleeping.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from anyserve.capability import Capability
from anyserve_router.errors import (
    DuplicateReplica,
    InvalidRegistration,
    RegistryFull,
    UnknownReplica,
    WrongReplicaKey,
)
from anyserve_router.load_reports import check_signals
from anyserve_router.offers import (
    DEFAULT_LIMITS,
    Offer,
    RegistrationLimits,
    check_capabilities,
    check_endpoint,
    check_engine_url,
    check_in_flight,
    check_link,
    check_replica_id,
    check_status,
)
from anyserve_router.registry_entries import KSERVE, OPENAI, Lease, LiveEntry, ReplicaEntry, keep, same_key

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "KSERVE",
    "OPENAI",
    "DuplicateReplica",
    "InvalidRegistration",
    "Lease",
    "LiveEntry",
    "ReplicaEntry",
    "ReplicaRegistry",
    "UnknownReplica",
]

DEFAULT_TTL_SECONDS = 15.0
#: How long what a silent replica offered is remembered (see :meth:`ReplicaRegistry.recent_offers`).
DEFAULT_OFFER_MEMORY_SECONDS = 300.0
Clock = Callable[[], float]


class ReplicaRegistry:
    """Replica id -> endpoint, capabilities, liveness and load."""

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        limits: RegistrationLimits = DEFAULT_LIMITS,
    ) -> None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)) or not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be a positive number, got {ttl_seconds!r}")
        self.ttl_seconds = float(ttl_seconds)
        self._clock = clock
        self._wall_clock = wall_clock
        #: What one registration may hold and where its endpoints may point.
        self.limits = limits
        #: Bumped whenever a replica or its offers come or go: what was worked out from them holds until then.
        self.version = 0
        self._lock = threading.Lock()
        self._replicas: dict[str, ReplicaEntry] = {}
        #: Seconds what a replica offered is remembered after it went silent.
        self.offer_memory_seconds = DEFAULT_OFFER_MEMORY_SECONDS
        self._gone: dict[str, tuple[float, tuple[Offer, ...]]] = {}
        #: Called with a replica's id once it has left (deregistered, expired, or found silent), outside the
        #: lock: what was learned about it (the routing pipeline's prefix index, session pins) goes with it.
        self.on_gone: list[Callable[[str], None]] = []

    def _left(self, *replica_ids: str) -> None:
        for replica_id in replica_ids:
            for listener in self.on_gone:
                listener(replica_id)

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _alive(self, replica: ReplicaEntry, now: float) -> bool:
        return replica.age(now) <= self.ttl_seconds

    # -- membership --------------------------------------------------------

    def register(
        self,
        replica_id: str,
        endpoint: str,
        capabilities: list[dict[str, Any]],
        now: float | None = None,
        status: dict[str, Any] | None = None,
        link: str | None = None,
        protocol: str = KSERVE,
        key: str | None = None,
    ) -> ReplicaEntry:
        """Add a replica, or replace the capabilities of one re-registering with its key from the same endpoint.

        ``key`` is the replica's own secret: the first registration of an id
        binds it, and while that entry lives the id can be registered again,
        heartbeated or deregistered only with the same key. So no one else can
        take over a live replica's id, its traffic or its load figures. The
        same id from another endpoint or with another key is refused while the
        holder is alive (:class:`DuplicateReplica`), and takes over once it is
        not: a replica restarted on a new port need not wait for the sweep.
        Registering counts as a heartbeat. Returns a copy of the entry.
        """
        replica_id = check_replica_id(replica_id)
        addresses = self.limits.addresses
        endpoint = check_engine_url(endpoint, addresses) if protocol == OPENAI else check_endpoint(endpoint, addresses)
        link = check_link(link, addresses)
        offers = check_capabilities(capabilities, self.limits)
        status = check_status(status)
        now = self._now(now)
        expired: list[str] = []
        try:
            return self._register(replica_id, endpoint, offers, now, status, link, protocol, key, expired)
        finally:
            self._left(*expired)

    def _register(
        self,
        replica_id: str,
        endpoint: str,
        offers: tuple[Offer, ...],
        now: float,
        status: dict[str, Any] | None,
        link: str | None,
        protocol: str,
        key: str | None,
        expired: list[str],
    ) -> ReplicaEntry:
        with self._lock:
            existing = self._replicas.get(replica_id)
            self.version += 1
            if existing is not None and existing.endpoint == endpoint and same_key(existing.key, key):
                existing.offers = offers
                existing.last_heartbeat = now
                existing.status = status
                existing.link = link
                existing.protocol = protocol
                replica = existing
            else:
                if existing is not None and self._alive(existing, now):
                    # The holder's endpoint is not named: the caller may not be entitled to learn it.
                    raise DuplicateReplica(
                        f"replica id {replica_id!r} is held by another live replica (last heartbeat "
                        f"{existing.age(now):.1f}s ago, ttl {self.ttl_seconds:g}s); refusing this registration. "
                        f"Give each replica a unique id, or stop the old one and retry after {self.ttl_seconds:g}s."
                    )
                if existing is None and len(self._replicas) >= self.limits.max_replicas:
                    # Silent entries the sweep has not reached yet make room first.
                    for rid in [rid for rid, r in self._replicas.items() if not self._alive(r, now)]:
                        self._gone[rid] = (now, self._replicas.pop(rid).offers)
                        expired.append(rid)
                    if len(self._replicas) >= self.limits.max_replicas:
                        raise RegistryFull(
                            f"the router holds {self.limits.max_replicas} replicas (router.max_replicas); "
                            "this one can register once another leaves"
                        )
                replica = ReplicaEntry(
                    replica_id,
                    endpoint,
                    offers,
                    registered_at=self._wall_clock(),
                    last_heartbeat=now,
                    status=status,
                    link=link,
                    protocol=protocol,
                    key=key,
                )
                self._replicas[replica_id] = replica
            return copy.copy(replica)

    def deregister(self, replica_id: str, key: str | None = None, *, admin: bool = False) -> None:
        """Forget a replica now (it is shutting down); unknown ids raise :class:`UnknownReplica`.

        Only the replica itself (its ``key``) or an admin may: :class:`WrongReplicaKey` otherwise.
        """
        replica_id = check_replica_id(replica_id)
        with self._lock:
            replica = self._replicas.get(replica_id)
            if replica is None:
                raise self._unknown(replica_id)
            if not admin and not same_key(replica.key, key):
                raise WrongReplicaKey(f"replica {replica_id!r} can be deregistered only by itself or an admin")
            del self._replicas[replica_id]
            self.version += 1
        self._left(replica_id)

    def heartbeat(
        self,
        replica_id: str,
        in_flight: int | None = None,
        now: float | None = None,
        key: str | None = None,
        *,
        signals: Any = None,
    ) -> None:
        """Mark a replica alive, optionally with its own in-flight count and load ``signals``.

        A replica already past its TTL is removed and told it is unknown,
        whether or not :meth:`expire` ran yet: the answer must not depend on
        sweep timing, and a replica that went silent that long re-registers
        so its capabilities are fresh. ``signals`` (the heartbeat's, see
        :func:`~anyserve_router.load_reports.check_signals`) replace those
        last reported; bad ones raise before anything is kept.
        """
        replica_id = check_replica_id(replica_id)
        reported = None if in_flight is None else check_in_flight(in_flight)
        report = None if signals is None else check_signals(signals, self.limits)
        now = self._now(now)
        with self._lock:
            replica = self._replicas.get(replica_id)
            silent = replica is not None and not self._alive(replica, now)
            if silent:
                del self._replicas[replica_id]
                self._gone[replica_id] = (now, replica.offers)  # type: ignore[union-attr]
                self.version += 1
            elif replica is not None:
                if not same_key(replica.key, key):
                    raise WrongReplicaKey(f"heartbeat for replica {replica_id!r} without that replica's key")
                replica.last_heartbeat = now
                if reported is not None:
                    replica.reported_in_flight = reported
                if report is not None:
                    keep(replica, *report)
                return
        if silent:
            self._left(replica_id)
        raise self._unknown(replica_id, hint=" register again")

    def report(self, replica_id: str, signals: dict[str, Any], key: str | None = None) -> None:
        """Replace a replica's own signals without counting as a heartbeat (an engine's, read by its poller).

        The caller made them itself, so they are not checked again; ``key`` must be the entry's.
        """
        with self._lock:
            replica = self._replicas.get(replica_id)
            if replica is None:
                raise self._unknown(replica_id)
            if not same_key(replica.key, key):
                raise WrongReplicaKey(f"signals for replica {replica_id!r} without that replica's key")
            replica.signals = signals

    def note_load(self, replica_id: str, queued: int, in_flight: int) -> None:
        """The replica-wide ``queued`` and ``in_flight`` a response carried; an unknown id is ignored.

        Runs on every response that carries them, so it costs a lookup and,
        only when a figure changed, one small dict made anew (never changed
        in place: selection reads it without the lock).
        """
        replica = self._replicas.get(replica_id)
        if replica is None:
            return
        signals = replica.signals
        if signals.get("queued") == queued and signals.get("in_flight") == in_flight:
            return
        with self._lock:
            replica.signals = {**replica.signals, "queued": queued, "in_flight": in_flight}

    def expire(self, now: float | None = None) -> list[str]:
        """Remove replicas silent for longer than ``ttl_seconds``; returns their ids, sorted."""
        now = self._now(now)
        with self._lock:
            dead = sorted(rid for rid, r in self._replicas.items() if not self._alive(r, now))
            for rid in dead:
                self._gone[rid] = (now, self._replicas.pop(rid).offers)
            self.version += bool(dead)
            self._forget_gone(now)  # the sweep bounds the memory, whether or not anyone asks it
        self._left(*dead)
        return dead

    def get(self, replica_id: str) -> ReplicaEntry:
        """A copy of one entry (alive or not yet swept); unknown ids raise :class:`UnknownReplica`."""
        with self._lock:
            replica = self._replicas.get(replica_id)
            if replica is None:
                raise self._unknown(replica_id)
            return copy.copy(replica)

    def addresses(self) -> set[str]:
        """The endpoints and links of every entry (alive or not yet swept)."""
        with self._lock:
            return {r.endpoint for r in self._replicas.values()} | {r.link for r in self._replicas.values() if r.link}

    def live_ids(self, now: float | None = None) -> list[str]:
        """Ids of the replicas within their TTL, sorted."""
        now = self._now(now)
        with self._lock:
            return sorted(rid for rid, r in self._replicas.items() if self._alive(r, now))

    def __len__(self) -> int:
        with self._lock:
            return len(self._replicas)

    def __contains__(self, replica_id: object) -> bool:
        with self._lock:
            return replica_id in self._replicas

    def _unknown(self, replica_id: str, hint: str = "") -> UnknownReplica:
        # Which ids are registered is not told: error bodies must not list the cluster's members.
        suffix = f";{hint}" if hint else ""
        return UnknownReplica(f"no live replica with id {replica_id!r}{suffix}")

    # -- listings ----------------------------------------------------------

    def snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every entry, sorted by id, as plain JSON-ready dicts (``GET /registry``).

        Entries past their TTL but not yet swept are listed with
        ``healthy: false`` rather than hidden, which helps explain routing.
        """
        now = self._now(now)
        with self._lock:
            return [r.listed(now, self._alive(r, now)) for r in sorted(self._replicas.values(), key=lambda r: r.id)]

    def known_capabilities(self, now: float | None = None) -> list[dict[str, Any]]:
        """The distinct capabilities live replicas offer (runtime keys left out), for 404 messages."""
        now = self._now(now)
        with self._lock:
            offered = {o.capability for r in self._replicas.values() if self._alive(r, now) for o in r.offers}
        return sorted((c.to_dict() for c in offered), key=lambda d: sorted((k, str(v)) for k, v in d.items()))

    # -- what choosing reads ---------------------------------------------------

    def live_entries(self, exclude: Iterable[str] = (), now: float | None = None) -> tuple[int, list[LiveEntry]]:
        """:attr:`version`, and a :class:`LiveEntry` for each live replica not in ``exclude``.

        A snapshot taken under the lock: choosing runs plugin code (matchers,
        routing hooks) on it without holding the lock.
        """
        now = self._now(now)
        skip = set(exclude)
        with self._lock:
            return self.version, [
                LiveEntry(
                    r.id,
                    {"endpoint": r.endpoint, "link": r.link, "protocol": r.protocol},
                    r.offers,
                    r.load,
                    r.signals,
                    r.offer_signals,
                )
                for r in self._replicas.values()
                if r.id not in skip and self._alive(r, now)
            ]

    def current(
        self, replica_ids: Iterable[str], exclude: Iterable[str] = (), now: float | None = None
    ) -> list[tuple[int, dict[str, Any], dict[tuple[Capability, bool], dict[str, Any]]] | None]:
        """Per id, in order: ``(load, signals, offer_signals)`` now, or ``None`` if gone, silent or excluded.

        What a request reads fresh about replicas matched earlier (the
        router's :class:`~anyserve_router.selection.MatchCache`): one lock,
        and work in proportion to the ids given, not to all replicas.
        """
        now = self._now(now)
        ttl = self.ttl_seconds
        out: list[tuple[int, dict[str, Any], dict[tuple[Capability, bool], dict[str, Any]]] | None] = []
        with self._lock:
            replicas = self._replicas
            for replica_id in replica_ids:
                r = replicas.get(replica_id)
                if r is None or now - r.last_heartbeat > ttl or (exclude and replica_id in exclude):
                    out.append(None)
                else:
                    ours, theirs = r.in_flight, r.reported_in_flight  # ReplicaEntry.load, without the call
                    out.append((ours if ours >= theirs else theirs, r.signals, r.offer_signals))
        return out

    def recent_offers(self, now: float | None = None) -> list[tuple[str, float, tuple[Offer, ...]]]:
        """``(replica id, when it went silent, its offers)`` of replicas expired within ``offer_memory_seconds``.

        A capability only such a replica offered is on its way back (the
        replica may be restarting, or paused), not unknown: asking for it is
        answered "not now" (503), not "nobody" (404). A replica that
        deregistered said it is gone, and is not remembered.
        """
        now = self._now(now)
        with self._lock:
            self._forget_gone(now)
            return [(rid, at, offers) for rid, (at, offers) in self._gone.items()]

    def _forget_gone(self, now: float) -> None:
        """Drop what replicas silent for longer than ``offer_memory_seconds`` offered (the lock is held)."""
        for rid in [rid for rid, (at, _) in self._gone.items() if now - at > self.offer_memory_seconds]:
            del self._gone[rid]

    # -- load accounting ---------------------------------------------------

    def acquire(self, replica_id: str) -> Lease:
        """Count one request in flight to ``replica_id`` until the lease is released.

        Use as ``with registry.acquire(rid): forward(...)``. The default
        routing prefers the least loaded replica, so counting is what spreads
        load. Raises :class:`UnknownReplica` if it went away since it was chosen.
        """
        with self._lock:
            replica = self._replicas.get(replica_id)
            if replica is None:
                raise self._unknown(replica_id)
            replica.in_flight += 1
        return Lease(self._lock, replica)

    def release(self, replica_id: str) -> None:
        """Uncount one request without a lease.

        An unknown id is ignored: a replica deregistered while serving is
        normal, and failing a finished request over it would lose the answer.
        Prefer :meth:`acquire`'s lease, which can never release twice.
        """
        with self._lock:
            replica = self._replicas.get(replica_id)
            if replica is not None:
                replica.in_flight = max(0, replica.in_flight - 1)
