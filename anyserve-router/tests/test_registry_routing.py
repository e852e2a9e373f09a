"""Choosing among registered replicas: candidate scoring, the routing hook, load accounting.

Time is injected (a fake monotonic clock, see conftest.py), so nothing here
sleeps. Only anyserve-core and anyserve-router are needed.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter

import pytest

from anyserve import hookimpl
from anyserve.builtins.subset import SubsetMatcher
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import PluginError
from anyserve.plugins import PluginManager, create_plugin_manager
from anyserve.records import RoutingStageSpec
from anyserve.routing import Pipeline, RouteRequest, build_pipeline
from anyserve.routing.pipeline import default_pipeline
from anyserve_router import selection
from anyserve_router.selection import MatchCache, candidates

CHAT = {"type": "chat", "model": "llama-70b"}
EMBED = {"type": "embed", "model": "minilm"}


_pipelines: dict[int, tuple[PluginManager, Pipeline]] = {}


def choose(registry, query, matcher, pm, **kwargs):
    """:func:`selection.choose` through the default pipeline of ``pm``, one pipeline per plugin manager."""
    if id(pm) not in _pipelines or _pipelines[id(pm)][0] is not pm:
        _pipelines[id(pm)] = (pm, default_pipeline(pm))
    return selection.choose(registry, RouteRequest(query), matcher, _pipelines[id(pm)][1], **kwargs)


# -- candidates -----------------------------------------------------------------


def test_candidates_score_with_the_subset_matcher(registry, matcher):
    registry.register("chat", "h:1", [CHAT])
    registry.register("embed", "h:2", [EMBED])
    registry.register("both", "h:3", [EMBED, CHAT])
    ids = sorted(c.id for c in candidates(registry, {"type": "chat"}, matcher))
    assert ids == ["both", "chat"]
    assert sorted(c.id for c in candidates(registry, {}, matcher)) == ["both", "chat", "embed"]
    assert candidates(registry, {"type": "chat", "model": "other"}, matcher) == []
    [both] = [c for c in candidates(registry, {"type": "chat"}, matcher) if c.id == "both"]
    assert both.capability == CHAT
    assert both.info["endpoint"] == "h:3"


def test_header_style_queries_match_case_insensitively(registry, matcher):
    registry.register("r1", "h:1", [CHAT])
    assert [c.id for c in candidates(registry, {"Type": "chat", "MODEL": "llama-70b"}, matcher)] == ["r1"]


def test_typed_values_match_text_queries(registry, matcher):
    registry.register("r1", "h:1", [{"type": "chat", "gpus": 2, "quantized": True, "temp": 1.0}])
    assert len(candidates(registry, {"gpus": "2"}, matcher)) == 1
    assert len(candidates(registry, {"quantized": "true", "temp": "1"}, matcher)) == 1
    assert candidates(registry, {"gpus": "3"}, matcher) == []


def test_runtime_keys_are_not_matched_but_carried(registry, matcher):
    registry.register("r1", "h:1", [{"type": "chat", "state": "starting", "stream": True}])
    [candidate] = candidates(registry, {"type": "chat"}, matcher)
    assert candidate.state == "starting"
    assert candidate.info["stream"] is True
    assert "state" not in candidate.capability and "stream" not in candidate.capability
    assert candidates(registry, {"state": "starting"}, matcher) == []


def test_best_offer_of_a_replica_wins(registry):
    class PrefersModel:
        def score(self, offered, query):
            if not offered.matches(query):
                return None
            return 1.0 if "model" in offered else 0.5

    registry.register("r1", "h:1", [{"type": "chat", "state": "cold"}, {**CHAT, "state": "cold"}])
    [candidate] = candidates(registry, {"type": "chat"}, PrefersModel())
    assert (candidate.score, candidate.capability) == (1.0, CHAT)


def test_equal_scores_prefer_the_warmer_offer(registry, matcher):
    registry.register("r1", "h:1", [{**CHAT, "state": "cold"}, {"type": "chat", "state": "hot"}])
    [candidate] = candidates(registry, {"type": "chat"}, matcher)
    assert candidate.state == "hot"


class CountingMatcher(SubsetMatcher):
    """The subset rule, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, offered, query):
        self.calls += 1
        return super().score(offered, query)


def test_the_match_cache_scores_once_until_offers_change(registry, clock):
    matcher, cache = CountingMatcher(), MatchCache()
    registry.register("r1", "h:1", [CHAT, EMBED])
    registry.register("r2", "h:2", [CHAT])
    first = [c.id for c in candidates(registry, CHAT, matcher, cache=cache)]
    scored = matcher.calls
    assert sorted(first) == ["r1", "r2"] and scored == 3
    for _ in range(5):  # load changes do not touch the cache: only offers do
        registry.heartbeat("r1", in_flight=7)
        assert sorted(c.id for c in candidates(registry, CHAT, matcher, cache=cache)) == ["r1", "r2"]
    assert matcher.calls == scored
    registry.register("r2", "h:2", [{**CHAT, "state": "failed"}])  # new offers: worked out again
    assert [c.id for c in candidates(registry, CHAT, matcher, cache=cache)] == ["r1"]
    assert matcher.calls > scored
    clock.advance(10)
    registry.heartbeat("r2")
    clock.advance(6)  # r1 has now been silent past its TTL: liveness is read per request, not cached
    assert candidates(registry, CHAT, matcher, cache=cache) == []  # r1 was cached as a match, but is not live


def test_exclude_leaves_out_the_delegating_replica(registry, matcher, pm):
    registry.register("r1", "h:1", [CHAT])
    registry.register("r2", "h:2", [CHAT])
    assert [c.id for c in candidates(registry, CHAT, matcher, exclude=["r1"])] == ["r2"]
    for _ in range(20):
        assert choose(registry, CHAT, matcher, pm, exclude=("r1",)).id == "r2"
    assert choose(registry, CHAT, matcher, pm, exclude=("r1", "r2")) is None


# -- choose: routing through the pipeline and the older hook ------------------------------------------------


def test_choose_returns_none_without_a_match(registry, matcher, pm):
    registry.register("r1", "h:1", [EMBED])
    assert choose(registry, CHAT, matcher, pm) is None


def test_routing_spreads_among_equal_candidates_by_in_flight(registry, matcher, pm):
    for i in range(3):
        registry.register(f"r{i}", f"h:{i + 1}", [CHAT])
    leases = []
    for _ in range(3):
        for _ in range(3):  # one round: each replica gets exactly one more request
            chosen = choose(registry, CHAT, matcher, pm)
            leases.append(registry.acquire(chosen.id))
    assert Counter(lease.replica_id for lease in leases) == {"r0": 3, "r1": 3, "r2": 3}
    for lease in leases:
        lease.release()
    assert {e["in_flight"] for e in registry.snapshot()} == {0}


def test_routing_avoids_the_loaded_replica(registry, matcher, pm):
    registry.register("busy", "h:1", [CHAT])
    registry.register("idle", "h:2", [CHAT])
    with registry.acquire("busy"):
        assert {choose(registry, CHAT, matcher, pm).id for _ in range(20)} == {"idle"}
    registry.heartbeat("idle", in_flight=4)  # load another router sent it
    assert {choose(registry, CHAT, matcher, pm).id for _ in range(20)} == {"busy"}


def test_idle_equal_replicas_are_taken_in_turn(registry, matcher, pm):
    for i in range(3):
        registry.register(f"r{i}", f"h:{i + 1}", [CHAT])
    picks = [choose(registry, CHAT, matcher, pm).id for _ in range(30)]
    assert Counter(picks) == {"r0": 10, "r1": 10, "r2": 10}
    assert all(a != b for a, b in itertools.pairwise(picks))  # never the same one twice in a row


def test_routing_prefers_hot_replicas(registry, matcher, pm):
    registry.register("cold", "h:1", [{**CHAT, "state": "cold"}])
    registry.register("hot", "h:2", [{**CHAT, "state": "hot"}])
    assert {choose(registry, CHAT, matcher, pm).id for _ in range(20)} == {"hot"}


def test_choose_asks_the_routing_hook_with_router_scope(registry, matcher):
    calls = []

    class LastById:
        @hookimpl
        def anyserve_select_target(self, query, candidates, scope):
            calls.append((dict(query), scope, sorted(c.id for c in candidates)))
            return max(candidates, key=lambda c: c.id)

    pm = create_plugin_manager(entrypoints=False, env={}, plugins=(LastById(),))
    registry.register("a", "h:1", [CHAT])
    registry.register("b", "h:2", [CHAT])
    assert choose(registry, {"type": "chat"}, matcher, pm).id == "b"
    assert calls == [({"type": "chat"}, "router", ["a", "b"])]


def test_a_hook_returning_a_stranger_is_a_plugin_error(registry, matcher):
    class Broken:
        @hookimpl
        def anyserve_select_target(self, query, candidates, scope):
            return "somewhere"

    pm = create_plugin_manager(entrypoints=False, env={}, plugins=(Broken(),))
    registry.register("a", "h:1", [CHAT])
    with pytest.raises(PluginError, match="not one of the 1 candidates"):
        choose(registry, CHAT, matcher, pm)


# -- load accounting ------------------------------------------------------------------


def test_lease_release_is_idempotent(registry):
    registry.register("r1", "h:1", [CHAT])
    lease = registry.acquire("r1")
    lease2 = registry.acquire("r1")
    lease.release()
    lease.release()
    assert registry.get("r1").in_flight == 1
    lease2.release()
    registry.release("r1")  # never below zero
    assert registry.get("r1").in_flight == 0


def test_release_by_id(registry):
    registry.register("r1", "h:1", [CHAT])
    registry.acquire("r1")
    registry.release("r1")
    assert registry.get("r1").in_flight == 0


def test_concurrent_acquire_and_release_balance(registry):
    registry.register("r1", "h:1", [CHAT])

    def work():
        for _ in range(2000):
            with registry.acquire("r1"):
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.get("r1").in_flight == 0


def test_returned_entries_are_copies(registry):
    replica = registry.register("r1", "h:1", [CHAT])
    replica.in_flight = 99
    replica.endpoint = "elsewhere:1"
    assert registry.get("r1").in_flight == 0
    assert registry.get("r1").endpoint == "h:1"


# -- many replicas of one model: a sample of them, plus the affinity scorers' nominees ------------------


def test_past_the_sample_size_a_decision_scores_a_sample_and_keeps_sessions_and_caches(registry, matcher):
    pm = create_plugin_manager(entrypoints=False, env={})
    settings = load_settings(env={"ANYSERVE_ROUTING_SCORERS": "session=2,prefix=2,least_load=1"})
    assert settings.routing.sample == 8
    pipeline = build_pipeline(Catalog(pm), settings)
    for i in range(200):
        registry.register(f"r{i:03d}", f"h:{i + 1}", [CHAT])
    cache = MatchCache()
    seen: Counter[str] = Counter()

    def pick(**route) -> str:
        request = RouteRequest(CHAT, **route)
        chosen = selection.choose(registry, request, matcher, pipeline, cache=cache)
        assert request.matched is not None and len(request.matched) == 200  # the scorers saw every match named
        return chosen.id

    for _ in range(400):
        seen[pick()] += 1
    assert len(seen) > 100  # no replica is favoured by the sample: they all come up
    homes = {pick(session=f"user-{u}") for u in range(5) for _ in range(10)}
    assert len(homes) == 5  # each session always on its own home, however the sample fell
    prompt = "system\x1f" + "a long shared system prompt. " * 40
    first = pick(prompt=prompt)
    assert {pick(prompt=prompt + f"user {i}") for i in range(30)} == {first}  # the cache holder is never left out


class Sizes:
    """A scorer that scores nothing and notes how many candidates each decision scored."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def score(self, request, candidates):
        self.seen.append(len(candidates))
        return [0.0] * len(candidates)


def test_a_sampled_decision_scores_the_nominees_and_fills_up_to_the_sample_at_random(registry, matcher, monkeypatch):
    monkeypatch.setattr(selection, "_random", random.Random(3))  # draws that all hit nominees are rare, not never
    sizes = Sizes()

    class SizesPlugin:
        @hookimpl
        def anyserve_register_routing(self, register):
            register(RoutingStageSpec("sizes", "scorer", lambda options: sizes, "counts candidates"))

    pm = create_plugin_manager(entrypoints=False, env={}, plugins=(SizesPlugin(),))
    settings = load_settings(env={"ANYSERVE_ROUTING_SCORERS": "session=2,prefix=2,sizes=1"})
    pipeline = build_pipeline(Catalog(pm), settings)
    for i in range(200):
        registry.register(f"r{i:03d}", f"h:{i + 1}", [CHAT])
    cache = MatchCache()
    prompt = "system\x1f" + "a long shared system prompt. " * 40
    for i in range(60):  # sessions and the prompt's holders spread over many replicas
        request = RouteRequest(CHAT, session=f"user-{i}", prompt=prompt)
        selection.choose(registry, request, matcher, pipeline, cache=cache)
    sizes.seen.clear()
    for _ in range(50):
        selection.choose(registry, RouteRequest(CHAT), matcher, pipeline, cache=cache)
    assert max(sizes.seen) <= pipeline.sample  # nothing nominated: a random sample of that many
    ids, _ = cache.matches(registry, CHAT, matcher, None, selection.KSERVE_ONLY)
    assert len(ids) == 200
    for i in range(50):
        request = RouteRequest(CHAT, session=f"user-{i}", prompt=prompt)
        named = pipeline.nominees(request, ids)
        assert len(named) > 1
        sizes.seen.clear()
        selection.choose(registry, request, matcher, pipeline, cache=cache)
        # every nominee, then random draws up to the sample, at least MIN_DRAWN of them (a repeat draws one fewer)
        assert len(named) < sizes.seen[0] <= max(pipeline.sample, len(named) + selection.MIN_DRAWN)
