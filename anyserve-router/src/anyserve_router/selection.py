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

from collections.abc import Iterable, Mapping
from typing import Any

from anyserve.candidates import COLD, FAILED, HOT, STARTING, STOPPING, Candidate
from anyserve.matching import Matcher
from anyserve.routing import Pipeline, RouteRequest
from anyserve_router.offers import Offer
from anyserve_router.registry import KSERVE, ReplicaRegistry

_STATE_RANK = {HOT: 0, STARTING: 1, COLD: 2, STOPPING: 2}
#: The default for KServe requests: anyserve replicas only.
KSERVE_ONLY = frozenset({KSERVE})
#: (replica id, query items, stream) -> the replica's best offer and its score, or None.
Best = tuple[float, Offer] | None


class MatchCache:
    """Each replica's best offer per query, valid while :attr:`ReplicaRegistry.version` stays the same.

    Bounded: past ``limit`` entries it starts over, so a stream of distinct
    queries costs at most what an uncached router would.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._version = -1
        self._entries: dict[tuple[str, tuple[tuple[str, Any], ...], bool | None], Best] = {}

    def lookup(
        self, version: int, replica_id: str, query: Mapping[str, Any], stream: bool | None
    ) -> tuple[tuple[str, tuple[tuple[str, Any], ...], bool | None], Best | bool]:
        """The entry's key, and its value (``False`` when not known yet)."""
        if version != self._version or len(self._entries) >= self.limit:
            self._entries.clear()
            self._version = version
        key = (replica_id, tuple(query.items()), stream)
        return key, self._entries.get(key, False)

    def keep(self, key: tuple[str, tuple[tuple[str, Any], ...], bool | None], best: Best) -> None:
        self._entries[key] = best


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
    found: list[Candidate] = []
    version, live = registry.live_entries(exclude, now)
    for replica_id, where, offers, load, signals, offer_signals in live:
        if protocols is not None and where["protocol"] not in protocols:
            continue
        if cache is None:
            best = _best(offers, query, matcher, stream)
        else:
            key, known = cache.lookup(version, replica_id, query, stream)
            best = _best(offers, query, matcher, stream) if known is False else known
            if known is False:
                cache.keep(key, best)
        if best is not None:
            score, offer = best
            if offer_signals:
                own = offer_signals.get((offer.capability, bool(offer.runtime.get("stream", False))))
                if own:
                    signals = {**signals, **own}
            found.append(
                Candidate(
                    id=replica_id,
                    capability=offer.capability,
                    score=score,
                    in_flight=load,
                    state=offer.state,
                    info={**where, **offer.runtime},
                    signals=signals,
                )
            )
    return found


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
    """The replica the routing pipeline picks for ``request``; ``None`` when none matches or the filters leave none."""
    found = candidates(
        registry,
        request.query,
        matcher,
        exclude=exclude,
        now=now,
        stream=request.stream,
        cache=cache,
        protocols=protocols,
    )
    if not found:
        return None
    return pipeline.choose(request, found)
