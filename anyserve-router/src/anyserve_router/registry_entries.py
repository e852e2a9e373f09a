"""What the registry holds per replica: the entry, the view choosing reads, and the lease a call holds.

Kept apart from :mod:`anyserve_router.registry`, which adds, expires and
looks up entries under its lock; everything here is changed only under
that lock too (the registry hands out copies of entries).
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple

from anyserve.capability import Capability
from anyserve.routing.held import SIGNAL, EngineCache
from anyserve_router.load_reports import OfferKey, listing
from anyserve_router.offers import Offer

#: What a registry entry's endpoint speaks: an anyserve replica (KServe v2), or an OpenAI-compatible engine server.
KSERVE = "kserve"
OPENAI = "openai"


@dataclass
class ReplicaEntry:
    """One registered replica. The registry hands out copies; mutate only through the registry."""

    id: str
    endpoint: str
    offers: tuple[Offer, ...]
    registered_at: float  # wall clock, for people
    last_heartbeat: float  # monotonic clock, for liveness
    #: Requests this router has sent and not yet seen finish (acquire/release).
    in_flight: int = 0
    #: What the replica itself last reported; includes traffic from other routers.
    reported_in_flight: int = 0
    #: The replica's own status document (workers, resources, switches), if it sent one.
    status: dict[str, Any] | None = None
    #: ``<transport>://host:port`` the router may call instead of the gRPC endpoint.
    link: str | None = None
    #: What the endpoint speaks: ``kserve`` (an anyserve replica) or ``openai`` (an engine server, see engines.py).
    protocol: str = KSERVE
    #: The replica's own secret, bound to its id at registration: only a caller presenting it may
    #: heartbeat, re-register or deregister the id while the entry lives (see :meth:`ReplicaRegistry.register`).
    key: str | None = field(default=None, repr=False)
    #: Load signals the replica (or the engine poller) last reported for the whole replica: ``draining``,
    #: ``cache_use``, ``queued``, ... (docs/routing.md). Replaced whole on each report, never changed in place.
    signals: dict[str, Any] = field(default_factory=dict)
    #: The same per offer, keyed by (capability, stream): ``queued``, ``slots``, ``service_seconds``, ``load_seconds``.
    offer_signals: dict[tuple[Capability, bool], dict[str, Any]] = field(default_factory=dict)

    @property
    def load(self) -> int:
        """The routing estimate: the router's own count is fresh, the report sees other clients."""
        return max(self.in_flight, self.reported_in_flight)

    @property
    def capabilities(self) -> list[dict[str, Any]]:
        return [offer.to_dict() for offer in self.offers]

    def listed(self, now: float, healthy: bool) -> dict[str, Any]:
        """The entry as ``GET /registry`` lists it: plain JSON-ready values, the key never."""
        return {
            "replica_id": self.id,
            "endpoint": self.endpoint,
            "link": self.link,
            "capabilities": self.capabilities,
            "healthy": healthy,
            "last_heartbeat_age_s": round(self.age(now), 3),
            "in_flight": self.load,
            "router_in_flight": self.in_flight,
            "reported_in_flight": self.reported_in_flight,
            "registered_at": self.registered_at,
            **({"status": self.status} if self.status else {}),
            **({"signals": listed_signals(self.signals)} if self.signals else {}),
            **({"offer_signals": listing(self.offer_signals)} if self.offer_signals else {}),
        }

    def age(self, now: float) -> float:
        """Seconds since the last heartbeat (or registration)."""
        return max(0.0, now - self.last_heartbeat)


class LiveEntry(NamedTuple):
    """What choosing reads of one live replica (:meth:`ReplicaRegistry.live_entries`)."""

    id: str
    where: dict[str, str | None]
    offers: tuple[Offer, ...]
    load: int
    signals: dict[str, Any]
    offer_signals: dict[tuple[Capability, bool], dict[str, Any]]


def listed_signals(signals: dict[str, Any]) -> dict[str, Any]:
    """Signals as JSON: an engine's cached prompts as their sizes and age, never their text."""
    found = signals.get(SIGNAL)
    return {**signals, SIGNAL: found.listed()} if isinstance(found, EngineCache) else signals


def keep(replica: ReplicaEntry, signals: dict[str, Any], offer_signals: dict[OfferKey, dict[str, Any]]) -> None:
    """Replace both signal dicts whole (the lock is held), keeping only offers the entry has, keyed as registered."""
    offered = {(o.capability, bool(o.runtime.get("stream", False))): o.capability for o in replica.offers}
    replica.signals = signals
    replica.offer_signals = {(offered[k], k[1]): v for k, v in offer_signals.items() if k in offered}


def same_key(held: str | None, given: str | None) -> bool:
    """Whether ``given`` is the key an entry was bound with, in constant time (no key bound: only no key)."""
    if held is None or given is None:
        return held is None and given is None
    return hmac.compare_digest(held.encode(), given.encode())


class Lease:
    """One request in flight to a replica; releasing it is idempotent.

    The lease holds the replica entry it counted against, so a request that
    outlives a re-registration from another endpoint never decrements the
    newcomer's count.
    """

    __slots__ = ("_lock", "_released", "_replica", "replica_id")

    def __init__(self, lock: threading.Lock, replica: ReplicaEntry) -> None:
        self._lock = lock
        self._replica = replica
        self._released = False
        self.replica_id = replica.id

    def release(self) -> None:
        with self._lock:
            if not self._released:
                self._released = True
                self._replica.in_flight = max(0, self._replica.in_flight - 1)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
