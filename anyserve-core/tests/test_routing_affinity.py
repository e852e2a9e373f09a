"""The ``session`` and ``prefix`` scorers, and saving what routing learned.

Candidates are plain :class:`Candidate` objects, as the router builds them;
nothing here starts a process.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from anyserve.builtins.routing_prefix import PrefixAffinity
from anyserve.builtins.routing_session import SessionAffinity, load_bound
from anyserve.candidates import Candidate
from anyserve.capability import Capability
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import ConfigError
from anyserve.plugins import create_plugin_manager
from anyserve.routing import Pipeline, RouteRequest, build_pipeline
from anyserve.routing.pipeline import MAX_STATE_BYTES
from anyserve.routing.request import chat_prompt

CHAT = {"type": "chat", "model": "m"}


def cand(id: str, in_flight: int = 0, **signals) -> Candidate:
    return Candidate(id=id, capability=Capability(type="chat", model="m"), in_flight=in_flight, signals=signals)


def replicas(n: int, **loads: int) -> list[Candidate]:
    return [cand(f"r{i}", loads.get(f"r{i}", 0)) for i in range(n)]


def session(key: str | None) -> RouteRequest:
    return RouteRequest(CHAT, session=key)


def chosen(scores: list[float], candidates: list[Candidate]) -> str:
    """The one candidate a session scorer gives 1.0."""
    assert sorted(scores)[-1] == 1.0 and scores.count(1.0) == 1 and sum(scores) == 1.0, scores
    return candidates[scores.index(1.0)].id


def pipeline(env: dict[str, str]) -> Pipeline:
    pm = create_plugin_manager(entrypoints=False, env={})
    return build_pipeline(Catalog(pm), load_settings(env=env))


# -- session ----------------------------------------------------------------------------------------------


def test_a_session_scores_one_replica_and_keeps_it():
    scorer = SessionAffinity()
    pool = replicas(4)
    first = chosen(scorer.score(session("conv-1"), pool), pool)
    for _ in range(5):
        assert chosen(scorer.score(session("conv-1"), pool), pool) == first
    assert chosen(scorer.score(session("conv-1"), list(reversed(pool))), list(reversed(pool))) == first


def test_sessions_spread_over_the_ring():
    scorer = SessionAffinity()
    pool = replicas(4)
    homes = Counter(chosen(scorer.score(session(f"user-{i}"), pool), pool) for i in range(400))
    assert set(homes) == {"r0", "r1", "r2", "r3"}
    assert min(homes.values()) > 40  # 64 virtual nodes each: no replica is left nearly empty


def test_a_request_without_a_session_scores_all_zeros():
    scorer = SessionAffinity()
    pool = replicas(3)
    assert scorer.score(session(None), pool) == [0.0, 0.0, 0.0]
    assert scorer.score(session(""), pool) == [0.0, 0.0, 0.0]
    scorer.observe(session(None), pool[0])
    assert scorer.snapshot()["pins"] == []


def test_a_busy_home_spills_to_the_next_replica_on_the_ring_and_comes_back():
    scorer = SessionAffinity(load_factor=1.25)
    pool = replicas(4)
    home = chosen(scorer.score(session("conv-1"), pool), pool)
    busy = [cand(c.id, 10 if c.id == home else 1) for c in pool]
    # total 13 -> bound ceil(1.25 * 14 / 4) = 5: the home is over it
    assert load_bound(busy, 1.25) == 5
    spill = chosen(scorer.score(session("conv-1"), busy), busy)
    assert spill != home
    # the same spill for the same loads: the walk is deterministic, not a random pick
    assert chosen(scorer.score(session("conv-1"), busy), busy) == spill
    # its load back within the bound, the session goes home (nothing was pinned: no observe)
    calm = [cand(c.id, 3 if c.id == home else 1) for c in pool]
    assert chosen(scorer.score(session("conv-1"), calm), calm) == home


def test_no_replica_goes_past_the_bound_whatever_the_sessions():
    scorer = SessionAffinity(load_factor=1.25)
    pool = replicas(4)
    for i in range(200):  # every session lands, its request counted where it landed
        bound = load_bound(pool, 1.25)
        request = session(f"s-{i % 7}")  # few sessions: the ring alone would pile them up
        target = chosen(scorer.score(request, pool), pool)
        assert next(c for c in pool if c.id == target).load <= bound
        scorer.observe(request, next(c for c in pool if c.id == target))
        for c in pool:
            if c.id == target:
                c.in_flight += 1
    assert max(c.load for c in pool) <= load_bound(pool, 1.25)


def test_adding_a_replica_moves_no_pinned_session():
    scorer = SessionAffinity()
    pool = replicas(3)
    homes = {}
    for i in range(300):
        request = session(f"conv-{i}")
        homes[request.session] = chosen(scorer.score(request, pool), pool)
        scorer.observe(request, next(c for c in pool if c.id == homes[request.session]))
    grown = [*pool, cand("r3")]
    moved = [key for key, home in homes.items() if chosen(scorer.score(session(key), grown), grown) != home]
    assert moved == []
    # a fresh scorer (no pins) sends about a quarter of them to the new replica: the pins are what kept them
    fresh = SessionAffinity()
    moved_fresh = [key for key, home in homes.items() if chosen(fresh.score(session(key), grown), grown) != home]
    assert 30 < len(moved_fresh) < 150
    assert all(chosen(fresh.score(session(key), grown), grown) == "r3" for key in moved_fresh)
    # and new sessions reach the new replica
    assert "r3" in {chosen(scorer.score(session(f"new-{i}"), grown), grown) for i in range(50)}


def test_a_restarted_scorer_sends_each_session_where_the_first_did():
    pool = replicas(5)
    before, after = SessionAffinity(), SessionAffinity()
    for i in range(100):
        request = session(f"conv-{i}")
        assert chosen(before.score(request, pool), pool) == chosen(after.score(request, pool), pool)


def test_a_pin_to_a_replica_that_left_is_not_honoured():
    scorer = SessionAffinity()
    pool = replicas(3)
    request = session("conv-1")
    home = chosen(scorer.score(request, pool), pool)
    other = next(c for c in pool if c.id != home)
    scorer.observe(request, other)  # the picker sent it elsewhere: the pin follows what happened
    assert chosen(scorer.score(request, pool), pool) == other.id
    remaining = [c for c in pool if c.id != other.id]
    assert chosen(scorer.score(request, remaining), remaining) == home
    scorer.forget(other.id)
    assert chosen(scorer.score(request, pool), pool) == home


def test_session_pins_are_bounded_and_survive_a_snapshot():
    scorer = SessionAffinity(max_sessions=10)
    pool = replicas(3)
    for i in range(25):
        scorer.observe(session(f"conv-{i}"), pool[i % 3])
    data = json.loads(json.dumps(scorer.snapshot()))
    assert len(data["pins"]) == 10
    assert "conv-24" not in json.dumps(data)  # pins are keyed by a hash: no client string is saved
    restored = SessionAffinity(max_sessions=10)
    restored.restore(data)
    assert restored.snapshot() == scorer.snapshot()
    for i in range(15, 25):  # the ten most recent, each where it was sent
        expected = pool[i % 3].id
        assert chosen(restored.score(session(f"conv-{i}"), pool), pool) == expected
    smaller = SessionAffinity(max_sessions=4)
    smaller.restore(data)
    assert len(smaller.snapshot()["pins"]) == 4


def test_session_options_are_checked():
    with pytest.raises(ConfigError, match="load_factor must be at least 1"):
        SessionAffinity(load_factor=0.5)
    settings = load_settings(env={"ANYSERVE_ROUTING_SCORERS": "session=1"})
    settings.routing.options["session"] = {"load_factr": 2}
    with pytest.raises(ConfigError, match=r"unknown option.*load_factr"):
        build_pipeline(Catalog(create_plugin_manager(entrypoints=False, env={})), settings)


# -- prefix -----------------------------------------------------------------------------------------------

SYSTEM_A = "You are a careful assistant for a law firm. " * 12
SYSTEM_B = "You answer questions about gardening in short sentences. " * 10


def conversation(system: str, turns: int) -> RouteRequest:
    messages = [{"role": "system", "content": system}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"question number {turn}: " + "tell me more. " * 8})
        if turn < turns - 1:
            messages.append({"role": "assistant", "content": f"answer number {turn}: " + "here it is. " * 10})
    return RouteRequest(CHAT, prompt=chat_prompt(messages))


def test_a_growing_conversation_scores_the_replica_that_served_it():
    scorer = PrefixAffinity(block_chars=64)
    pool = replicas(3)
    scorer.observe(conversation(SYSTEM_A, 1), pool[1])
    for turns in (2, 3, 4):
        request = conversation(SYSTEM_A, turns)
        scores = scorer.score(request, pool)
        assert scores[0] == scores[2] == 0.0
        assert scores[1] > 0.5, scores
        scorer.observe(request, pool[1])
    # the very prompt it was sent: every block there
    assert scorer.score(conversation(SYSTEM_A, 4), pool)[1] == 1.0


def test_a_shared_system_prompt_scores_its_share_only():
    scorer = PrefixAffinity(block_chars=64)
    pool = replicas(2)
    scorer.observe(conversation(SYSTEM_A, 1), pool[0])
    other_user = RouteRequest(
        CHAT, prompt=chat_prompt([{"role": "system", "content": SYSTEM_A}, {"role": "user", "content": "x" * 600}])
    )
    score = scorer.score(other_user, pool)[0]
    blocks = other_user.prefix_blocks(64)
    assert 0.0 < score < 1.0
    assert score == pytest.approx(scorer.depths(blocks)["r0"] / len(blocks))


def test_distinct_system_prompts_spread_and_each_conversation_stays():
    p = pipeline({"ANYSERVE_ROUTING_SCORERS": "prefix=2,least_load=1"})
    pool = replicas(2)
    first_a = p.choose(conversation(SYSTEM_A, 1), pool).id
    first_b = p.choose(conversation(SYSTEM_B, 1), pool).id
    assert first_a != first_b  # no prefix known for B anywhere: the tie goes to the other replica
    for turns in (2, 3):
        assert p.choose(conversation(SYSTEM_A, turns), pool).id == first_a
        assert p.choose(conversation(SYSTEM_B, turns), pool).id == first_b


def test_a_prompt_shorter_than_min_blocks_scores_zeros():
    scorer = PrefixAffinity(block_chars=64, min_blocks=4)
    pool = replicas(2)
    short = RouteRequest(CHAT, prompt="y" * 200)  # 3 whole blocks
    scorer.observe(short, pool[0])
    assert scorer.score(short, pool) == [0.0, 0.0]
    assert scorer.score(RouteRequest(CHAT), pool) == [0.0, 0.0]  # no prompt at all (a KServe request)
    long = RouteRequest(CHAT, prompt="y" * 300)
    assert scorer.score(long, pool)[0] == pytest.approx(3 / 4)


def test_each_replica_keeps_at_most_max_blocks_and_the_leading_ones_last():
    scorer = PrefixAffinity(block_chars=16, max_blocks=20)
    pool = replicas(2)
    long = RouteRequest(CHAT, prompt="".join(f"block {i:09d}." for i in range(30)))  # 30 blocks of 16
    scorer.observe(long, pool[0])
    assert scorer.tracked() == {"r0": 20}
    # the tail was dropped, the leading run kept: 20 of the 30 blocks, from the first
    assert scorer.score(long, pool)[0] == pytest.approx(20 / 30)
    for i in range(10):
        scorer.observe(RouteRequest(CHAT, prompt=f"other {i:010d}" * 3), pool[0])
    assert scorer.tracked() == {"r0": 20}
    assert len(scorer._holders) == 20  # the index holds nothing the replicas no longer do


def test_replicas_tracked_are_bounded_least_recently_chosen_first():
    scorer = PrefixAffinity(block_chars=16, max_replicas=3)
    pool = replicas(5)
    request = RouteRequest(CHAT, prompt="p" * 64)
    for c in pool:
        scorer.observe(request, c)
    assert list(scorer.tracked()) == ["r2", "r3", "r4"]
    assert scorer.score(request, pool) == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_the_index_holds_at_most_max_total_blocks_the_least_recently_chosen_shed_first():
    scorer = PrefixAffinity(block_chars=16, max_blocks=100, max_total_blocks=50)
    pool = replicas(3)
    for i, c in enumerate(pool):
        scorer.observe(RouteRequest(CHAT, prompt=f"replica {i} says " + "z" * 400), c)  # 25 blocks each
    assert sum(scorer.tracked().values()) == 50
    assert scorer.tracked() == {"r0": 0, "r1": 25, "r2": 25}
    assert len(scorer._holders) == 50


def test_a_cache_holder_over_its_share_of_the_load_yields_to_the_others():
    scorer = PrefixAffinity(block_chars=64)
    request = conversation(SYSTEM_A, 2)
    scorer.observe(request, cand("r0"))
    # Within ceil(1.5 * (total + 1) / n): 4 <= ceil(1.5 * 9 / 3) = 5, the cache wins.
    assert scorer.score(request, [cand("r0", 4), cand("r1", 2), cand("r2", 2)]) == [1.0, 0.0, 0.0]
    # Past it: 7 > ceil(1.5 * 10 / 3) = 5, the request goes by load, and the replica it goes to learns the prefix.
    assert scorer.score(request, [cand("r0", 7), cand("r1", 1), cand("r2", 1)]) == [0.0, 0.0, 0.0]
    p = pipeline({"ANYSERVE_ROUTING_SCORERS": "prefix=2,least_load=1"})
    p.scorers[0].impl.observe(request, cand("r0"))
    spilled = p.choose(request, [cand("r0", 7), cand("r1", 1), cand("r2", 2)]).id
    assert spilled == "r1"
    assert p.choose(request, [cand("r0", 7), cand("r1", 3), cand("r2", 3)]).id == "r1"


def test_forget_drops_a_replica_and_its_blocks():
    scorer = PrefixAffinity(block_chars=16)
    pool = replicas(2)
    scorer.observe(RouteRequest(CHAT, prompt="a" * 64), pool[0])
    scorer.observe(RouteRequest(CHAT, prompt="b" * 64), pool[1])
    scorer.forget("r0")
    # "a" is now held nowhere: only the vacancy preference for the replica that holds nothing is left.
    assert scorer.score(RouteRequest(CHAT, prompt="a" * 64), pool) == [0.5, 0.0]
    assert scorer.score(RouteRequest(CHAT, prompt="b" * 64), pool) == [0.0, 1.0]
    assert scorer.tracked() == {"r1": 4}
    scorer.forget("never-seen")


def test_a_block_sent_to_several_replicas_stays_with_those_left():
    scorer = PrefixAffinity(block_chars=16)
    pool = replicas(3)
    shared = RouteRequest(CHAT, prompt="s" * 64)
    for c in pool:
        scorer.observe(shared, c)
    scorer.forget("r0")
    assert scorer.score(shared, pool) == [0.0, 1.0, 1.0]
    scorer.forget("r2")
    assert scorer.score(shared, pool) == [0.0, 1.0, 0.0]
    scorer.forget("r1")
    assert scorer.score(shared, pool) == [0.0, 0.0, 0.0]
    assert scorer._holders == {}


def test_a_thousand_replicas_sharing_a_system_prompt_score_by_their_own_depth():
    scorer = PrefixAffinity(block_chars=32)
    pool = replicas(1000)
    shared = "s" * 320
    for i, c in enumerate(pool):  # every replica holds the shared system prompt; one holds the conversation
        scorer.observe(RouteRequest(CHAT, prompt=shared + f"{i:032d}"), c)
    request = RouteRequest(CHAT, prompt=shared + f"{7:032d}" + "z" * 64)
    depths = scorer.depths(request.prefix_blocks(32))
    assert depths["r7"] == 11 and depths["r8"] == 10 and len(depths) == 1000
    scores = scorer.score(request, pool)
    assert scores[7] == pytest.approx(11 / 13) and scores[8] == pytest.approx(10 / 13)


def test_depths_are_what_reading_every_block_finds_whatever_was_sent_and_evicted():
    """The depth search reads a few blocks, relying on holder sets that nest; reading all of them must agree."""
    rng = random.Random(11)
    scorer = PrefixAffinity(block_chars=8, max_blocks=40, max_total_blocks=300)
    pool = replicas(12)
    systems = ["".join(rng.choice("abc") for _ in range(8 * rng.randint(1, 12))) for _ in range(4)]

    def prompt() -> str:
        return rng.choice(systems) + "".join(rng.choice("xyz") for _ in range(8 * rng.randint(0, 10)))

    for _ in range(400):
        scorer.observe(RouteRequest(CHAT, prompt=prompt()), rng.choice(pool))
        blocks = RouteRequest(CHAT, prompt=prompt()).prefix_blocks(8)
        every: dict[str, int] = {}
        for depth, block in enumerate(blocks, 1):
            held = scorer._holders.get(block)
            for replica_id in [held] if isinstance(held, str) else held or ():
                every[replica_id] = depth  # deeper blocks come later: each replica ends at its deepest
        assert scorer.depths(blocks) == every


def test_prefix_snapshot_round_trip():
    scorer = PrefixAffinity(block_chars=32)
    pool = replicas(3)
    for i, c in enumerate(pool):
        scorer.observe(conversation(SYSTEM_A if i else SYSTEM_B, i + 1), c)
    data = json.loads(json.dumps(scorer.snapshot()))
    restored = PrefixAffinity(block_chars=32)
    restored.restore(data)
    assert restored.tracked() == scorer.tracked()
    for turns in (1, 2, 3):
        request = conversation(SYSTEM_A, turns)
        assert restored.score(request, pool) == scorer.score(request, pool)
    with pytest.raises(ValueError, match="32-character blocks"):
        PrefixAffinity(block_chars=64).restore(data)


# -- saving and loading ----------------------------------------------------------------------------------


def test_the_pipeline_saves_and_loads_its_learners(tmp_path: Path):
    env = {"ANYSERVE_ROUTING_SCORERS": "prefix=2,session=1,least_load=1"}
    before = pipeline(env)
    pool = replicas(3)
    homes = {}
    for i in range(20):
        request = RouteRequest(CHAT, session=f"conv-{i}", prompt=f"system {i % 4} " * 40)
        homes[i] = before.choose(request, pool).id
    assert sorted(before.save(tmp_path / "state")) == ["prefix", "session"]
    files = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert files == ["routing-prefix.json", "routing-session.json"]
    assert all(((tmp_path / "state" / name).stat().st_mode & 0o777) == 0o600 for name in files)

    after = pipeline(env)
    assert sorted(after.load(tmp_path / "state")) == ["prefix", "session"]
    for i in range(20):
        request = RouteRequest(CHAT, session=f"conv-{i}", prompt=f"system {i % 4} " * 40)
        after.rate(request, pool)
        best = max(pool, key=lambda c: c.route_score)
        assert best.id == homes[i]


def test_a_corrupt_or_oversized_state_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    env = {"ANYSERVE_ROUTING_SCORERS": "prefix=1,session=1"}
    (tmp_path / "routing-prefix.json").write_text("{not json")
    (tmp_path / "routing-session.json").write_bytes(b" " * (MAX_STATE_BYTES + 1))
    p = pipeline(env)
    with caplog.at_level(logging.WARNING, logger="anyserve.routing"):
        assert p.load(tmp_path) == []
    assert "routing-prefix.json ignored" in caplog.text and "over the" in caplog.text
    (tmp_path / "routing-session.json").write_text(json.dumps({"version": 99}))
    assert p.load(tmp_path) == []
    assert p.load(tmp_path / "missing") == []  # nothing saved yet: nothing to say


def test_a_pipeline_without_learners_saves_nothing(tmp_path: Path):
    assert pipeline({}).save(tmp_path / "state") == []
    assert not (tmp_path / "state").exists()


def test_a_prefix_nobody_holds_goes_where_least_is_held():
    """Three system prompts on three replicas, and a fourth arrives: it goes to the one caching nothing yet."""
    scorer = PrefixAffinity(block_chars=64)
    pool = replicas(4)
    for i, system in enumerate((SYSTEM_A, SYSTEM_B, "You translate French into English. " * 14)):
        scorer.observe(conversation(system, 1), pool[i])
    fourth = conversation("You write haiku about the sea and nothing else. " * 10, 1)
    assert scorer.depths(fourth.prefix_blocks(64)) == {}
    scores = scorer.score(fourth, pool)
    assert scores[3] == max(scores) > 0.0 and scores[:3] == [pytest.approx(s, abs=0.2) for s in scores[:3]]
    p = pipeline({"ANYSERVE_ROUTING_SCORERS": "prefix=2,least_load=1"})
    learned = p.scorers[0].impl
    for i, system in enumerate((SYSTEM_A, SYSTEM_B, "You translate French into English. " * 14)):
        learned.observe(conversation(system, 1), pool[i])
    assert p.choose(fourth, replicas(4)).id == "r3"
    assert p.choose(fourth, replicas(4, r3=3)).id != "r3"  # emptiness does not outweigh a queue
