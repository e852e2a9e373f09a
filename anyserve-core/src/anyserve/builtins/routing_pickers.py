"""Built-in routing pickers: ``highest``, ``p2c`` and ``weighted_random``."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from anyserve.candidates import Candidate
from anyserve.hookspecs import hookimpl
from anyserve.records import RoutingStageSpec
from anyserve.routing.request import RouteRequest
from anyserve.routing.stages import PICKER

#: Totals closer than this are a tie: sums of weighted floats differ in their last bits.
TIE = 1e-9


class Highest:
    """The highest total; ties taken in turn, in a stable order (by id).

    In turn rather than at random: requests that arrive one after another
    then land on different replicas. For LLM engines that matters beyond the
    count: two prompts reaching one engine together are prefilled together,
    and both wait for both, while a random tie-break sends a second arrival
    to the same engine half the time (seen as a doubled time to first token
    for one stream in four, 4 streams on 2 llama-server engines of 2 slots
    each; bench/llm_bench.py).
    """

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Candidate:
        best = max(c.route_score for c in candidates)
        ties = [c for c in candidates if c.route_score >= best - TIE]
        if len(ties) == 1:
            return ties[0]
        ties.sort(key=lambda c: c.id)
        return ties[next(self._turn) % len(ties)]


class RoundRobin:
    """Each candidate in turn, in a stable order (by id), whatever the scores: the baseline others are measured by."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Candidate:
        if len(candidates) == 1:
            return candidates[0]
        ordered = sorted(candidates, key=lambda c: c.id)
        return ordered[next(self._turn) % len(ordered)]


class PowerOfTwo:
    """Two candidates at random, the higher total of the two (the lower load on a tie).

    Spreads load without herding: with many routers, or signals a heartbeat
    old, every router choosing "the best" sends its next burst to the same
    replica; two random choices do not.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Candidate:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        if abs(a.route_score - b.route_score) > TIE:
            return a if a.route_score > b.route_score else b
        return a if a.load <= b.load else b


class WeightedRandom:
    """At random, each candidate as likely as its total is large (all zero: equally likely)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Candidate:
        weights = [max(0.0, c.route_score) for c in candidates]
        if not any(weights):
            return self._rng.choice(candidates)
        return self._rng.choices(candidates, weights=weights)[0]


@hookimpl
def anyserve_register_routing(register):
    register(RoutingStageSpec("highest", PICKER, lambda options: Highest(), "highest total, ties in turn"))
    register(RoutingStageSpec("round_robin", PICKER, lambda options: RoundRobin(), "each in turn, scores unread"))
    register(RoutingStageSpec("p2c", PICKER, lambda options: PowerOfTwo(), "better of two random candidates"))
    register(
        RoutingStageSpec(
            "weighted_random", PICKER, lambda options: WeightedRandom(), "at random, in proportion to the total"
        )
    )
