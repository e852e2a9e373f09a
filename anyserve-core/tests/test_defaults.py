"""Core's default routing and delegation decisions."""

from collections import Counter

from anyserve.candidates import COLD, HOT, Candidate
from anyserve.capability import Capability
from anyserve.delegation import DELEGATED_FROM_HEADER, DELEGATION_DEPTH_HEADER


def cands(*specs):
    return [Candidate(id=i, capability=Capability(type="x"), score=s, in_flight=f, state=st) for i, s, f, st in specs]


def test_routing_prefers_score_then_hot_then_least_loaded(plugin_manager):
    route = plugin_manager.hook.anyserve_select_target
    assert route(query={}, candidates=cands(("a", 0, 0, HOT), ("b", 1, 5, HOT)), scope="router").id == "b"
    assert route(query={}, candidates=cands(("a", 0, 0, COLD), ("b", 0, 9, HOT)), scope="router").id == "b"
    assert route(query={}, candidates=cands(("a", 0, 3, HOT), ("b", 0, 1, HOT)), scope="agent").id == "b"


def test_routing_spreads_among_equals(plugin_manager):
    picks = Counter(
        plugin_manager.hook.anyserve_select_target(
            query={}, candidates=cands(("a", 0, 0, HOT), ("b", 0, 0, HOT), ("c", 0, 0, HOT)), scope="router"
        ).id
        for _ in range(300)
    )
    assert set(picks) == {"a", "b", "c"}


def test_delegation_goes_back_to_the_router_once(plugin_manager):
    delegate = plugin_manager.hook.anyserve_delegate
    first = delegate(query={"type": "heavy"}, origin="replica-a", depth=0, router_url="http://127.0.0.1:8080")
    assert not first.refused and first.url == "http://127.0.0.1:8080"
    assert first.headers == {DELEGATED_FROM_HEADER: "replica-a", DELEGATION_DEPTH_HEADER: "1"}
    second = delegate(query={"type": "heavy"}, origin="replica-b", depth=1, router_url="http://127.0.0.1:8080")
    assert second.refused and "at most 1" in second.reason
    alone = delegate(query={"type": "heavy"}, origin="replica-a", depth=0, router_url=None)
    assert alone.refused and "no router" in alone.reason
