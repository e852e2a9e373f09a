"""Built-in routing filters: ``best_match``, ``routable`` and ``budget``."""

from __future__ import annotations

from anyserve.candidates import FAILED, STOPPING, Candidate
from anyserve.hookspecs import hookimpl
from anyserve.records import RoutingStageSpec
from anyserve.routing.request import RouteRequest
from anyserve.routing.stages import FILTER


class BestMatch:
    """Only the candidates whose capability matches the query best (a matcher may rank offers)."""

    def filter(self, request: RouteRequest, candidates: list[Candidate]) -> list[Candidate]:
        if len(candidates) < 2:
            return candidates
        best = max(c.score for c in candidates)
        return [c for c in candidates if c.score == best]


class Routable:
    """Not failed, not stopping, and not draining (a replica shutting down reports ``draining``)."""

    def filter(self, request: RouteRequest, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.state not in (FAILED, STOPPING) and not c.signals.get("draining")]


class Budget:
    """Leaves out a cold offer its replica says does not fit its resource budget, while another candidate is left.

    Such a replica would have to stop a hot worker class to start it
    (``fits: false`` in its report). With nothing else left the request still
    goes there, and the replica evicts by its own policy.
    """

    def filter(self, request: RouteRequest, candidates: list[Candidate]) -> list[Candidate]:
        fitting = [c for c in candidates if c.signals.get("fits", True)]
        return fitting or candidates


@hookimpl
def anyserve_register_routing(register):
    register(RoutingStageSpec("best_match", FILTER, lambda options: BestMatch(), "only the best capability match"))
    register(RoutingStageSpec("routable", FILTER, lambda options: Routable(), "not failed, stopping or draining"))
    register(RoutingStageSpec("budget", FILTER, lambda options: Budget(), "no cold offer that would evict to fit"))
