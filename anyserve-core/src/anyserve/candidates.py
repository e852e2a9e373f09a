"""What routing decisions are made over: :class:`Candidate`, and the state names offers carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anyserve.capability import Capability

HOT = "hot"
COLD = "cold"
STARTING = "starting"
#: Being stopped; it will be cold next.
STOPPING = "stopping"
#: Crashed repeatedly; not routable until the replica retries it.
FAILED = "failed"


@dataclass(slots=True)
class Candidate:
    """A replica (router scope) or worker (agent scope) that matches a query.

    ``score`` is the matcher's, ``in_flight`` the requests sent to it and not
    yet finished, ``state`` its offer's state. ``signals`` are what it last
    reported about its load (``queued``, ``service_seconds``, ``load_seconds``,
    ``cache_use``, ``draining``, ...; see docs/routing.md), and
    ``route_score`` the routing pipeline's weighted total for it.
    """

    id: str
    capability: Capability
    score: float = 0.0
    in_flight: int = 0
    state: str = HOT
    info: Mapping[str, Any] = field(default_factory=dict)
    signals: Mapping[str, Any] = field(default_factory=dict)
    route_score: float = 0.0
    #: In flight plus queued: a request waiting for a free slot counts twice, once for the wait it adds.
    #: Worked out once, here: every load-aware scorer reads it for every candidate.
    load: int = field(init=False)

    def __post_init__(self) -> None:
        queued = self.signals.get("queued") if self.signals else None
        self.load = self.in_flight + int(queued) if queued else self.in_flight
