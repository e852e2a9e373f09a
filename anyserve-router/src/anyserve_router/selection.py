"""Choosing a replica: match the live ones with the matcher, let the routing pipeline pick.

Kept apart from the registry, which stores entries, liveness and load:
this module only reads a snapshot of it (:meth:`ReplicaRegistry.live_entries`)
and runs plugin code, the matcher and the routing pipeline
(:mod:`anyserve.routing`), outside the registry's lock. It matches once per request: the chosen
candidate carries the capability it matched, and nothing downstream in the
router scores again. With a :class:`MatchCache` (the router keeps one), not
even that: each replica's best offer for a query is kept until the
registry's offers change, so a request costs a dictionary lookup per live
replica, not a matcher call per offer.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from anyserve.candidates import COLD, FAILED, HOT, STARTING, STOPPING, Candidate
from anyserve.matching import Matcher
from anyserve.routing import Pipeline, RouteRequest
from anyserve_router.offers import Offer
from anyserve_router.registry import KSERVE, LiveEntry, ReplicaRegistry

_STATE_RANK = {HOT: 0, STARTING: 1, COLD: 2, STOPPING: 2}
#: The default for KServe requests: anyserve replicas only.
KSERVE_ONLY = frozenset({KSERVE})
_random = random.Random()
#: Matches a sampled decision draws at random, however many the scorers nominate.
MIN_DRAWN = 2
#: A replica's best offer for a query and its score, or None.
Best = tuple[float, Offer] | None


class Match(NamedTuple):
    """A live replica's best offer for a query: what does not change until the registry's offers do."""

    replica_id: str
    score: float
    offer: Offer
    info: dict[str, Any]
    #: The offer's key in the entry's ``offer_signals``.
    signals_key: tuple[Any, bool]


#: What the registry says of a replica now: its load, its signals and its offers' signals.
Reading = tuple[int, dict[str, Any], dict[tuple[Any, bool], dict[str, Any]]]
#: (query items, stream, protocols) -> the matching replicas' ids and their matches.
IndexKey = tuple[tuple[tuple[str, Any], ...], bool | None, frozenset[str] | None]


class MatchCache:
    """The replicas matching each query, valid while :attr:`ReplicaRegistry.version` stays the same.

    A request then costs a dictionary lookup plus a liveness and load read
    for the replicas that match it, however many others are registered
    (bench/routing_decision.py: 1,000 replicas). Bounded: past ``limit``
    queries it starts over, so a stream of distinct queries costs at most
    what an uncached router would.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._version = -1
        self._entries: dict[IndexKey, tuple[tuple[str, ...], tuple[Match, ...]]] = {}
        #: id(ids) -> (ids, id -> position), for sampled decisions (made when first needed).
        self._positions: dict[int, tuple[tuple[str, ...], dict[str, int]]] = {}

    def positions(self, ids: tuple[str, ...]) -> dict[str, int]:
        """Each id's position in ``ids`` (a tuple :meth:`matches` returned), kept with it."""
        found = self._positions.get(id(ids))
        if found is None or found[0] is not ids:
            if len(self._positions) >= self.limit:
                self._positions.clear()
            found = self._positions[id(ids)] = (ids, {rid: i for i, rid in enumerate(ids)})
        return found[1]

    def matches(
        self,
        registry: ReplicaRegistry,
        query: Mapping[str, Any],
        matcher: Matcher,
        stream: bool | None,
        protocols: frozenset[str] | None,
    ) -> tuple[tuple[str, ...], tuple[Match, ...]]:
        """The ids of the replicas that match, and their matches (liveness and load are read by the caller)."""
        version = registry.version
        if version != self._version or len(self._entries) >= self.limit:
            self._entries.clear()
            self._positions.clear()
            self._version = version
        key = (tuple(query.items()), stream, protocols)
        found = self._entries.get(key)
        if found is None:
            # A replica not alive now can only come back by registering again, which changes the version.
            _, live = registry.live_entries()
            matched = tuple(_matching(live, query, matcher, stream, protocols))
            found = (tuple(m.replica_id for m in matched), matched)
            self._entries[key] = found
        return found


def _best(offers: tuple[Offer, ...], query: Mapping[str, Any], matcher: Matcher, stream: bool | None) -> Best:
    """A replica's best-scoring offer of the right kind; ties go to the warmer state."""
    best: tuple[float, int, Offer] | None = None
    for offer in offers:
        if stream is not None and offer.runtime.get("stream", False) != stream:
            continue
        if offer.state == FAILED:
            continue  # the replica says it cannot serve this right now
        score = matcher.score(offer.capability, query)
        if score is None:
            continue
        key = (score, -_STATE_RANK.get(offer.state, len(_STATE_RANK)), offer)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else (best[0], best[2])


def candidates(
    registry: ReplicaRegistry,
    query: Mapping[str, Any],
    matcher: Matcher,
    exclude: Iterable[str] = (),
    now: float | None = None,
    *,
    stream: bool | None = None,
    cache: MatchCache | None = None,
    protocols: frozenset[str] | None = KSERVE_ONLY,
) -> list[Candidate]:
    """Live replicas that can serve ``query``, each scored by its best-matching capability.

    ``exclude`` holds replica ids to leave out (the replica that delegated the
    request). ``stream`` (when not ``None``) keeps only offers of that kind:
    ``stream: true`` offers serve streaming requests, the others (``stream``
    false or absent, as for a plain handler) serve unary ones, so a request
    never lands on a replica that offers the capability only the other way.
    Among a replica's capabilities the best score wins, ties going to the
    warmer state. The candidate carries the replica's load as ``in_flight``
    and its endpoint, link and protocol in ``info``, and what the replica
    reported about its load as ``signals`` (the replica's, overlaid with
    those of the matched offer). ``protocols`` keeps only
    entries speaking one of them (``None``: any): KServe requests go to
    anyserve replicas only, OpenAI requests to engine servers as well.
    """
    if cache is None:
        _, live = registry.live_entries(exclude, now)
        pairs = [(match, entry) for entry in live for match in _matching((entry,), query, matcher, stream, protocols)]
        return _made(
            [match for match, _ in pairs], [(entry.load, entry.signals, entry.offer_signals) for _, entry in pairs]
        )
    ids, matches = cache.matches(registry, query, matcher, stream, protocols)
    return _read(registry, ids, matches, exclude, now)


def _read(
    registry: ReplicaRegistry,
    ids: tuple[str, ...],
    matches: tuple[Match, ...],
    exclude: Iterable[str],
    now: float | None,
) -> list[Candidate]:
    """Candidates of the matches whose replicas are live and not excluded, with their load read now."""
    return _made(matches, registry.current(ids, exclude, now))


def _made(matches: Sequence[Match], reads: Sequence[Reading | None]) -> list[Candidate]:
    """A candidate per match whose replica was read (``None``: gone, silent or excluded).

    One loop, the candidate made in it, positionally: a decision pays this
    per candidate it scores, and a helper call or keywords would cost
    about as much again.
    """
    found: list[Candidate] = []
    for match, reading in zip(matches, reads, strict=True):
        if reading is None:
            continue
        load, signals, offer_signals = reading
        if offer_signals:
            own = offer_signals.get(match.signals_key)
            if own:
                signals = {**signals, **own}
        offer = match.offer
        found.append(Candidate(match.replica_id, offer.capability, match.score, load, offer.state, match.info, signals))
    return found


def _sampled(
    pipeline: Pipeline,
    request: RouteRequest,
    ids: tuple[str, ...],
    matches: tuple[Match, ...],
    cache: MatchCache,
) -> tuple[tuple[str, ...], tuple[Match, ...]]:
    """``pipeline.sample`` matches: those the scorers nominate, the rest at random (power of k choices).

    At least :data:`MIN_DRAWN` are drawn at random however many are
    nominated, so a request whose nominees are all busy still has idle
    replicas to go to.
    """
    named = pipeline.nominees(request, ids)
    n, draw = len(ids), _random.random
    picked = {int(n * draw()) for _ in range(max(MIN_DRAWN, pipeline.sample - len(named)))}  # a repeat: one fewer
    if named:
        positions = cache.positions(ids)
        picked.update(positions[rid] for rid in named if rid in positions)
    order = sorted(picked)
    return tuple([ids[i] for i in order]), tuple([matches[i] for i in order])


def _matching(
    live: Iterable[LiveEntry],
    query: Mapping[str, Any],
    matcher: Matcher,
    stream: bool | None,
    protocols: frozenset[str] | None,
) -> Iterable[Match]:
    for entry in live:
        where = entry.where
        if protocols is not None and where["protocol"] not in protocols:
            continue
        best = _best(entry.offers, query, matcher, stream)
        if best is not None:
            score, offer = best
            key = (offer.capability, bool(offer.runtime.get("stream", False)))
            yield Match(entry.id, score, offer, {**where, **offer.runtime}, key)


def choose(
    registry: ReplicaRegistry,
    request: RouteRequest,
    matcher: Matcher,
    pipeline: Pipeline,
    exclude: Iterable[str] = (),
    now: float | None = None,
    *,
    cache: MatchCache | None = None,
    protocols: frozenset[str] | None = KSERVE_ONLY,
) -> Candidate | None:
    """The replica the routing pipeline picks for ``request``; ``None`` when none matches or the filters leave none.

    With a :class:`MatchCache` and more matches than ``pipeline.sample``, the
    pipeline sees a sample of them (:func:`_sampled`) and ``request.matched``
    names them all.
    """
    if cache is None:
        found = candidates(
            registry, request.query, matcher, exclude=exclude, now=now, stream=request.stream, protocols=protocols
        )
    else:
        ids, matches = cache.matches(registry, request.query, matcher, request.stream, protocols)
        if pipeline.sample and len(ids) > pipeline.sample:
            request.matched = ids
            found = _read(registry, *_sampled(pipeline, request, ids, matches, cache), exclude, now)
            if not found:  # the whole sample silent or excluded: a rare draw, or a fleet mostly gone
                found = _read(registry, ids, matches, exclude, now)
        else:
            found = _read(registry, ids, matches, exclude, now)
    if not found:
        return None
    return pipeline.choose(request, found)
