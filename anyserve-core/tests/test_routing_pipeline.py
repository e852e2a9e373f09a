"""The routing pipeline: core's filters, scorers and pickers, configuration, and the older routing hook.

Candidates are plain :class:`Candidate` objects, as the router and the agent
build them; nothing here starts a process.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from anyserve import hookimpl
from anyserve.builtins.routing_pickers import PowerOfTwo, RoundRobin, WeightedRandom
from anyserve.builtins.routing_scorers import ColdStart, LeastLoad, Residency
from anyserve.candidates import COLD, FAILED, HOT, STARTING, Candidate
from anyserve.capability import Capability
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import ConfigError, PluginError
from anyserve.plugins import create_plugin_manager
from anyserve.records import RoutingStageSpec
from anyserve.routing import RouteRequest, build_pipeline

CHAT = RouteRequest({"type": "chat"})


def cand(id: str, *, score: float = 0.0, in_flight: int = 0, state: str = HOT, **signals) -> Candidate:
    return Candidate(
        id=id, capability=Capability(type="chat"), score=score, in_flight=in_flight, state=state, signals=signals
    )


def pipeline(env: dict[str, str] | None = None, plugins=()):
    pm = create_plugin_manager(entrypoints=False, env={}, plugins=plugins)
    return build_pipeline(Catalog(pm), load_settings(env=env or {}))


def picks(p, make, n: int = 30) -> Counter:
    return Counter(p.choose(CHAT, make()).id for _ in range(n))


# -- the default pipeline: best match, hot first, least loaded, in turn --------------------------------------


def test_the_default_pipeline_keeps_the_best_match_then_hot_then_least_loaded():
    p = pipeline()
    assert p.describe() == {
        "filters": ["best_match", "routable", "budget"],
        "scorers": {"cold_start": 2.0, "least_load": 1.0},
        "picker": "highest",
        "sample": 8,
    }
    assert p.choose(CHAT, [cand("a", score=0), cand("b", score=1, in_flight=5)]).id == "b"
    assert p.choose(CHAT, [cand("a", state=COLD), cand("b", in_flight=90)]).id == "b"
    assert p.choose(CHAT, [cand("a", state=COLD), cand("b", state=STARTING, in_flight=3)]).id == "b"
    assert p.choose(CHAT, [cand("a", in_flight=3), cand("b", in_flight=1)]).id == "b"


def test_equals_are_taken_in_turn_never_twice_in_a_row():
    p = pipeline()
    order = [p.choose(CHAT, [cand("c"), cand("a"), cand("b")]).id for _ in range(9)]
    assert Counter(order) == {"a": 3, "b": 3, "c": 3}
    assert all(x != y for x, y in itertools.pairwise(order))


def test_a_queued_request_weighs_more_than_one_in_flight():
    assert LeastLoad().score(CHAT, [cand("a", in_flight=2), cand("b", in_flight=1, queued=2)]) == [1.0, 0.75]


def test_filters_drop_failed_draining_and_cold_offers_that_would_evict():
    p = pipeline()
    assert p.choose(CHAT, [cand("a", state=FAILED)]) is None
    assert p.choose(CHAT, [cand("a", draining=True), cand("b", in_flight=9)]).id == "b"
    assert p.choose(CHAT, [cand("a", state=COLD, fits=False), cand("b", state=COLD, in_flight=4)]).id == "b"
    # Nothing else left: the replica evicts by its own policy rather than the request failing.
    assert p.choose(CHAT, [cand("a", state=COLD, fits=False)]).id == "a"


# -- cold start ----------------------------------------------------------------------------------------------


def test_a_cold_replica_is_chosen_only_when_loading_beats_the_queue_on_the_hot_ones():
    p = pipeline()
    hot = lambda queued: cand("hot", in_flight=4, queued=queued, service_seconds=2.0)  # noqa: E731
    cold = cand("cold", state=COLD, load_seconds=5.0)
    assert p.choose(CHAT, [hot(2), cold]).id == "hot"  # 4 s of queue < 5 s of loading
    assert p.choose(CHAT, [hot(3), cand("cold", state=COLD, load_seconds=5.0)]).id == "cold"  # 6 s > 5 s
    # No load time known: a hot replica however busy.
    assert p.choose(CHAT, [hot(50), cand("cold", state=COLD)]).id == "hot"


def test_the_queue_estimate_uses_slots_when_the_replica_reports_them():
    scores = ColdStart().score(
        CHAT, [cand("hot", in_flight=6, slots=2, service_seconds=1.0), cand("cold", state=COLD, load_seconds=3.0)]
    )
    assert scores == [1.0, 1.0]  # 5 waiting for 2 slots at 1 s each: 5 s > 3 s


def test_residency_reads_hot_offers_and_what_engines_report_resident():
    lora = RouteRequest({"type": "chat", "model": "base", "adapter": "sql"})
    scored = Residency().score(
        lora, [cand("a", adapters=["sql"]), cand("b", adapters=["poems"]), cand("c", state=COLD, adapters=["sql"])]
    )
    assert scored == [1.0, 0.0, 1.0]
    model = RouteRequest({"type": "chat", "model": "m"})
    assert Residency().score(model, [cand("a", state=COLD), cand("b", state=COLD, resident=["m"])]) == [0.0, 1.0]


# -- pickers -------------------------------------------------------------------------------------------------


def scored(*totals: float) -> list[Candidate]:
    out = [cand(f"r{i}", in_flight=i) for i in range(len(totals))]
    for c, total in zip(out, totals, strict=True):
        c.route_score = total
    return out


def test_round_robin_ignores_scores():
    picker = RoundRobin()
    assert [picker.pick(CHAT, scored(9, 0, 0)).id for _ in range(6)] == ["r0", "r1", "r2"] * 2


def test_power_of_two_takes_the_better_of_two_random_candidates():
    picker = PowerOfTwo(random.Random(7))
    chosen = Counter(picker.pick(CHAT, scored(3, 2, 1, 0)).id for _ in range(600))
    assert chosen["r3"] == 0  # the worst of four is never the better of two
    assert chosen["r0"] > chosen["r1"] > chosen["r2"] > 0


def test_weighted_random_follows_the_totals():
    picker = WeightedRandom(random.Random(3))
    chosen = Counter(picker.pick(CHAT, scored(3, 1, 0)).id for _ in range(4000))
    assert chosen["r2"] == 0 and 2.4 < chosen["r0"] / chosen["r1"] < 3.6
    assert set(Counter(picker.pick(CHAT, scored(0, 0)).id for _ in range(50))) == {"r0", "r1"}


# -- configuration -------------------------------------------------------------------------------------------


def test_settings_choose_stages_and_weights_from_the_environment():
    p = pipeline({"ANYSERVE_ROUTING_SCORERS": "least_load=1, residency=0", "ANYSERVE_ROUTING_PICKER": "round_robin"})
    assert p.describe()["scorers"] == {"least_load": 1.0}  # weight 0: never called
    assert p.describe()["picker"] == "round_robin"
    assert [p.choose(CHAT, [cand("a"), cand("b", in_flight=5)]).id for _ in range(2)] == ["a", "b"]
    assert pipeline({"ANYSERVE_ROUTING_SAMPLE": "32"}).describe()["sample"] == 32
    with pytest.raises(ConfigError, match=r"routing\.sample"):
        pipeline({"ANYSERVE_ROUTING_SAMPLE": "-1"})


def test_unknown_or_misplaced_stage_names_are_configuration_errors():
    with pytest.raises(ConfigError, match=r"no routing stage named 'fastest'.*installed: .*least_load"):
        pipeline({"ANYSERVE_ROUTING_SCORERS": "fastest=1"})
    with pytest.raises(ConfigError, match="'least_load' is a scorer, not a picker; pickers installed: highest"):
        pipeline({"ANYSERVE_ROUTING_PICKER": "least_load"})
    with pytest.raises(ConfigError, match="weights must be finite and at least 0: least_load=-1"):
        pipeline({"ANYSERVE_ROUTING_SCORERS": "least_load=-1"})


class Spot:
    """A third party's scorer, registered through the same hook as core's."""

    def score(self, request, candidates):
        return [1.0 if c.signals.get("spot") else 0.0 for c in candidates]


class SpotPlugin:
    @hookimpl
    def anyserve_register_routing(self, register):
        register(RoutingStageSpec("spot", "scorer", lambda options: Spot(), "prefer spot capacity"))


def test_a_plugin_scorer_is_selected_by_name_and_weighted():
    p = pipeline({"ANYSERVE_ROUTING_SCORERS": "spot=3,least_load=1"}, plugins=(SpotPlugin(),))
    assert p.choose(CHAT, [cand("a"), cand("b", in_flight=2, spot=True)]).id == "b"
    p = pipeline({"ANYSERVE_ROUTING_SCORERS": "spot=0.1,least_load=1"}, plugins=(SpotPlugin(),))
    assert p.choose(CHAT, [cand("a"), cand("b", in_flight=2, spot=True)]).id == "a"


class NotAScorer:
    @hookimpl
    def anyserve_register_routing(self, register):
        register(RoutingStageSpec("broken", "scorer", lambda options: object()))


def test_a_stage_that_does_not_implement_its_kind_is_a_plugin_error():
    with pytest.raises(PluginError, match="routing scorer 'broken' does not implement Scorer"):
        pipeline({"ANYSERVE_ROUTING_SCORERS": "broken=1"}, plugins=(NotAScorer(),))


class ShortScorer:
    """Scores one candidate fewer than it is given."""

    def score(self, request, candidates):
        return [1.0] * (len(candidates) - 1)


class ShortPlugin:
    @hookimpl
    def anyserve_register_routing(self, register):
        register(RoutingStageSpec("short", "scorer", lambda options: ShortScorer(), "one score short"))


def test_a_scorer_that_misses_a_candidate_is_a_plugin_error_naming_it():
    p = pipeline({"ANYSERVE_ROUTING_SCORERS": "short=1"}, plugins=(ShortPlugin(),))
    with pytest.raises(PluginError, match="routing scorer 'short' gave 2 scores for 3 candidates"):
        p.choose(CHAT, [cand("a"), cand("b"), cand("c")])


# -- the older routing hook ----------------------------------------------------------------------------------


def test_a_select_target_plugin_picks_in_the_pickers_place_and_sees_the_totals():
    seen = []

    class Heaviest:
        @hookimpl
        def anyserve_select_target(self, query, candidates, scope):
            seen.append({c.id: round(c.route_score, 2) for c in candidates})
            return max(candidates, key=lambda c: c.in_flight)

    p = pipeline()
    assert p.choose(CHAT, [cand("a"), cand("b", in_flight=1)]).id == "a"
    p.choose(CHAT, [cand("only")])
    heaviest = Heaviest()
    p_hooked = pipeline(plugins=(heaviest,))
    assert p_hooked.choose(CHAT, [cand("a"), cand("b", in_flight=1)]).id == "b"
    assert seen == [{"a": 3.0, "b": 2.5}]
    assert p_hooked.describe()["picker"].startswith("anyserve_select_target (")
    assert p_hooked.choose(CHAT, [cand("only")]).id == "only"  # asked even for one candidate
    assert len(seen) == 2


def test_a_select_target_plugin_registered_later_is_honoured():
    pm = create_plugin_manager(entrypoints=False, env={})
    p = build_pipeline(Catalog(pm), load_settings(env={}))

    class Last:
        @hookimpl
        def anyserve_select_target(self, query, candidates, scope):
            return max(candidates, key=lambda c: c.id)

    assert p.choose(CHAT, [cand("b", in_flight=3), cand("a")]).id == "a"
    pm.register(Last())
    assert p.choose(CHAT, [cand("b", in_flight=3), cand("a")]).id == "b"
