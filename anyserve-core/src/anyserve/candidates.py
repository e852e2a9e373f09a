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


@dataclass
class Candidate:
    """A replica (router scope) or worker (agent scope) that matches a query."""

    id: str
    capability: Capability
    score: float = 0.0
    in_flight: int = 0
    state: str = HOT
    info: Mapping[str, Any] = field(default_factory=dict)
