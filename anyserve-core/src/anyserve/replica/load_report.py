"""What a replica tells its router about its load (docs/routing.md, "Load signals").

Two channels, two costs. Each heartbeat carries the full report
(:func:`load_report`): the replica's own ``draining``, ``queued`` and
``in_flight``, and per offer what serves it: requests on it and waiting
for it, its ``slots``, its recent ``service_seconds``, its worker class's
``load_seconds`` and whether that class ``fits`` the budget now. It is made
once per heartbeat from what the pool and the lifecycle already hold, so
requests pay nothing for it. Between heartbeats every response carries
just ``queued,in_flight`` (:data:`~anyserve.protocol.names.LOAD_KEY`),
so a router sees a burst as it builds rather than a second later.

The only per-request bookkeeping is :class:`ServiceTimes`: an exponentially
weighted mean of request durations per offer, a dictionary lookup and two
arithmetic operations per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyserve.candidates import COLD
from anyserve.capability import Capability

if TYPE_CHECKING:
    from anyserve.replica.lifecycle import Lifecycle
    from anyserve.replica.pool import WorkerPool, WorkerSlot

#: (capability, stream): one offer, as the router keys its signals.
OfferKey = tuple[Capability, bool]
#: Weight of the newest duration in the mean: about the last ten requests count.
SERVICE_WEIGHT = 0.2


class ServiceTimes:
    """Recent mean request duration per offer, in seconds.

    Only requests that found a free slot are counted: one that waited
    inside the worker would count its wait as service, and the router
    already adds the wait (queued times service time) on top.
    """

    def __init__(self, weight: float = SERVICE_WEIGHT) -> None:
        self.weight = weight
        self.means: dict[OfferKey, float] = {}

    def observe(self, key: OfferKey, seconds: float) -> None:
        mean = self.means.get(key)
        self.means[key] = seconds if mean is None else mean + self.weight * (seconds - mean)


def _serving(slots: list[WorkerSlot]) -> dict[str, int]:
    """Requests on ``slots`` and waiting in them, and how many they serve at once (when they say)."""
    figures = {"in_flight": sum(s.connection.in_flight for s in slots), "queued": sum(s.waiting for s in slots)}
    if slots and all(s.concurrency for s in slots):
        figures["slots"] = sum(s.concurrency for s in slots)
    return figures


def _plain_offers(pool: WorkerPool, times: ServiceTimes) -> list[dict[str, Any]]:
    """One entry per offer of the plain workers (those up, answering or not)."""
    by_offer: dict[OfferKey, list[WorkerSlot]] = {}
    for slot in pool.slots.values():
        if slot.worker_class is None and not slot.connection.closed:
            for key in slot.handlers:
                by_offer.setdefault(key, []).append(slot)
    entries = []
    for key, slots in by_offer.items():
        entry = {"capability": key[0].to_dict(), "stream": key[1], **_serving(slots)}
        if key in times.means:
            entry["service_seconds"] = round(times.means[key], 6)
        entries.append(entry)
    return entries


def _class_offers(lifecycle: Lifecycle, times: ServiceTimes) -> list[dict[str, Any]]:
    """One entry per offer of each worker class, running or not."""
    entries = []
    for worker_class in lifecycle.classes.values():
        spec = worker_class.spec
        slot = lifecycle.slot_of(worker_class)
        in_flight = slot.connection.in_flight if slot is not None else 0
        figures: dict[str, Any] = {
            "in_flight": in_flight,
            "queued": max(0, in_flight - spec.max_concurrency) + worker_class.waiters,
            "slots": spec.max_concurrency,
        }
        if worker_class.load_seconds is not None:
            figures["load_seconds"] = round(worker_class.load_seconds, 6)
        if lifecycle.public_state(worker_class) == COLD:
            figures["fits"] = lifecycle.fits(spec)
        for offer in spec.describe():
            stream = bool(offer.pop("stream", False))
            key = (Capability(offer), stream)
            entry = {"capability": offer, "stream": stream, **figures}
            if key in times.means:
                entry["service_seconds"] = round(times.means[key], 6)
            entries.append(entry)
    return entries


def load_report(
    pool: WorkerPool, lifecycle: Lifecycle | None, times: ServiceTimes, *, queued: int, draining: bool
) -> dict[str, Any]:
    """The ``signals`` a heartbeat carries; ``queued`` is the requests waiting for a worker to start or return."""
    waiting, in_flight = pool.load()
    offers = _plain_offers(pool, times)
    if lifecycle is not None:
        offers += _class_offers(lifecycle, times)
    return {"draining": draining, "queued": queued + waiting, "in_flight": in_flight, "offers": offers}
