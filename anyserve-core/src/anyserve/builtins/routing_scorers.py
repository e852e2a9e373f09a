"""Built-in routing scorers: ``least_load``, ``cold_start`` and ``residency``.

They read the load signals replicas report (docs/routing.md): ``queued``
(requests waiting for a free slot), ``slots`` (requests served at once),
``service_seconds`` (the recent mean time a request took), ``load_seconds``
(how long a cold or starting offer takes to become hot), ``resident`` and
``adapters`` (models and LoRA adapters an engine holds in memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from anyserve.candidates import HOT, STARTING, Candidate
from anyserve.hookspecs import hookimpl
from anyserve.records import RoutingStageSpec
from anyserve.routing.request import RouteRequest
from anyserve.routing.stages import SCORER

#: Query keys that name a LoRA adapter.
ADAPTER_KEYS = ("adapter", "lora")


class LeastLoad:
    """Fewer requests on it, higher: ``(least + 1) / (load + 1)``, where load counts a queued request twice.

    Relative to the least loaded candidate, so the best always scores 1 and
    one more request weighs most where loads are low: 0 against 1 halves
    the score, 10 against 11 barely moves it.
    """

    def score(self, request: RouteRequest, candidates: Sequence[Candidate]) -> list[float]:
        loads = [c.load for c in candidates]
        least = min(loads) + 1
        return [least / (load + 1) for load in loads]


def expected_wait(candidate: Candidate) -> float:
    """Seconds a new request would wait on ``candidate`` before it is served, from what it reported."""
    signals = candidate.signals
    queued = int(signals.get("queued", 0))
    slots = signals.get("slots")
    if slots:
        queued = max(queued, candidate.in_flight + 1 - int(slots))
    return queued * float(signals.get("service_seconds", 0.0))


class ColdStart:
    """Hot 1, starting 0.5, cold 0; but a cold or starting one scores 1 when the wait on every hot one is longer.

    The wait on a hot candidate is its queue times its recent service time;
    a cold one costs its ``load_seconds``. So a burst that would queue on
    the one hot replica spills onto a second, cold one exactly when loading
    it is quicker than waiting, and never otherwise.
    """

    def score(self, request: RouteRequest, candidates: Sequence[Candidate]) -> list[float]:
        hot = [c for c in candidates if c.state == HOT]
        if len(hot) == len(candidates):
            return [1.0] * len(candidates)
        shortest = min((expected_wait(c) for c in hot), default=float("inf"))
        scores = []
        for c in candidates:
            if c.state == HOT:
                scores.append(1.0)
                continue
            load_seconds = c.signals.get("load_seconds")
            if hot and load_seconds is not None and float(load_seconds) < shortest:
                scores.append(1.0)
            else:
                scores.append(0.5 if c.state == STARTING else 0.0)
        return scores


def _wanted(query: Mapping[str, Any]) -> tuple[Any, Any]:
    adapter = next((query[k] for k in ADAPTER_KEYS if k in query), None)
    return query.get("model"), adapter


class Residency:
    """1 where what the request needs is in memory: a hot offer, or a model or adapter the engine reports resident."""

    def score(self, request: RouteRequest, candidates: Sequence[Candidate]) -> list[float]:
        model, adapter = _wanted(request.query)
        scores = []
        for c in candidates:
            signals = c.signals
            if adapter is not None:
                held = adapter in signals.get("adapters", ()) or (c.state == HOT and "adapters" not in signals)
            else:
                held = c.state == HOT or (model is not None and model in signals.get("resident", ()))
            scores.append(1.0 if held else 0.0)
        return scores


@hookimpl
def anyserve_register_routing(register):
    register(
        RoutingStageSpec("least_load", SCORER, lambda options: LeastLoad(), "fewest requests in flight and queued")
    )
    register(
        RoutingStageSpec(
            "cold_start", SCORER, lambda options: ColdStart(), "hot first; cold when loading beats the queue"
        )
    )
    register(RoutingStageSpec("residency", SCORER, lambda options: Residency(), "the model or LoRA adapter in memory"))
