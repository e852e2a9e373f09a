"""The replica registry: membership, liveness, expiry, listings and input checks.

Time is injected (a fake monotonic clock, see conftest.py), so nothing here
sleeps. Only anyserve-core and anyserve-router are needed.
"""

from __future__ import annotations

import pytest

from anyserve.errors import InvalidRequest, NotFound
from anyserve_router.errors import RegistryFull, WrongReplicaKey
from anyserve_router.offers import RegistrationLimits
from anyserve_router.registry import DuplicateReplica, InvalidRegistration, ReplicaRegistry, UnknownReplica
from anyserve_router.selection import candidates

CHAT = {"type": "chat", "model": "llama-70b"}
EMBED = {"type": "embed", "model": "minilm"}


# -- register / replace / duplicate --------------------------------------------


def test_register_returns_the_entry(registry):
    replica = registry.register("r1", "10.0.0.1:50051", [CHAT])
    assert (replica.id, replica.endpoint) == ("r1", "10.0.0.1:50051")
    assert replica.capabilities == [CHAT]  # the default state, hot, is not repeated
    assert "r1" in registry and len(registry) == 1


def test_reregister_from_same_endpoint_replaces_capabilities(registry, matcher):
    registry.register("r1", "10.0.0.1:50051", [CHAT])
    registry.register("r1", "10.0.0.1:50051", [EMBED])
    assert len(registry) == 1
    assert candidates(registry, {"type": "chat"}, matcher) == []
    assert [c.id for c in candidates(registry, {"type": "embed"}, matcher)] == ["r1"]


def test_reregister_keeps_the_routers_in_flight_count(registry):
    registry.register("r1", "h:1", [CHAT])
    with registry.acquire("r1"):
        registry.register("r1", "h:1", [CHAT, EMBED])
        assert registry.get("r1").in_flight == 1
    assert registry.get("r1").in_flight == 0


def test_same_id_from_other_endpoint_while_alive_is_refused(registry, clock):
    registry.register("r1", "10.0.0.1:50051", [CHAT])
    clock.advance(14)
    with pytest.raises(DuplicateReplica) as info:
        registry.register("r1", "10.0.0.2:50051", [CHAT])
    message = str(info.value)
    assert "'r1'" in message and "10.0.0.1" not in message  # the holder's address is not the caller's to learn
    assert info.value.code == "ALREADY_EXISTS"
    assert registry.get("r1").endpoint == "10.0.0.1:50051"


def test_a_live_id_is_bound_to_the_key_it_registered_with(registry, clock):
    registry.register("r1", "10.0.0.1:50051", [CHAT], key="k1")
    # the same endpoint, but another key (or none): someone else, refused
    for other in ("k2", None):
        with pytest.raises(DuplicateReplica):
            registry.register("r1", "10.0.0.1:50051", [EMBED], key=other)
        with pytest.raises(WrongReplicaKey):
            registry.heartbeat("r1", in_flight=10**6, key=other)
        with pytest.raises(WrongReplicaKey):
            registry.deregister("r1", key=other)
    assert registry.get("r1").capabilities == [CHAT] and registry.get("r1").reported_in_flight == 0
    # the replica itself
    registry.register("r1", "10.0.0.1:50051", [CHAT, EMBED], key="k1")
    registry.heartbeat("r1", in_flight=2, key="k1")
    assert registry.get("r1").reported_in_flight == 2
    # an admin may remove it
    registry.deregister("r1", admin=True)
    assert registry.live_ids() == []


def test_a_dead_holders_id_can_be_taken_with_a_new_key(registry, clock):
    registry.register("r1", "10.0.0.1:50051", [CHAT], key="k1")
    clock.advance(15.5)
    registry.register("r1", "10.0.0.1:50051", [CHAT], key="k2")  # restarted on the same port, new key
    registry.heartbeat("r1", key="k2")


def test_same_id_from_other_endpoint_takes_over_a_dead_holder(registry, clock):
    registry.register("r1", "10.0.0.1:50051", [CHAT])
    clock.advance(15.5)  # past the TTL, not yet swept
    replica = registry.register("r1", "10.0.0.2:50051", [EMBED])
    assert replica.endpoint == "10.0.0.2:50051"
    assert registry.snapshot()[0]["healthy"] is True


def test_lease_from_a_replaced_replica_does_not_touch_the_newcomer(registry, clock):
    registry.register("r1", "h:1", [CHAT])
    lease = registry.acquire("r1")
    clock.advance(20)
    registry.register("r1", "h:2", [CHAT])
    with registry.acquire("r1"):
        lease.release()
        assert registry.get("r1").in_flight == 1


# -- deregister / heartbeat / unknown ids ----------------------------------------


def test_deregister(registry, matcher):
    registry.register("r1", "h:1", [CHAT])
    registry.deregister("r1")
    assert "r1" not in registry
    assert candidates(registry, {}, matcher) == []


def test_unknown_ids_raise_unknown_replica(registry):
    registry.register("r1", "h:1", [CHAT])
    for call in (registry.deregister, registry.heartbeat, registry.acquire, registry.get):
        with pytest.raises(UnknownReplica, match=r"'nope'") as info:
            call("nope")
        assert "r1" not in str(info.value)  # error bodies do not list the cluster's members
    assert issubclass(UnknownReplica, NotFound)


def test_release_of_unknown_id_is_ignored(registry):
    registry.release("gone")  # a replica deregistered mid-request must not fail the request


def test_heartbeat_keeps_a_replica_alive(registry, clock, matcher):
    registry.register("r1", "h:1", [CHAT])
    for _ in range(5):
        clock.advance(10)
        registry.heartbeat("r1")
    assert registry.expire() == []
    assert [c.id for c in candidates(registry, CHAT, matcher)] == ["r1"]


def test_heartbeat_reports_in_flight(registry, matcher):
    registry.register("r1", "h:1", [CHAT])
    registry.heartbeat("r1", in_flight=7)
    [candidate] = candidates(registry, CHAT, matcher)
    assert candidate.in_flight == 7
    assert registry.snapshot()[0]["reported_in_flight"] == 7


def test_heartbeat_after_ttl_forgets_the_replica_so_it_reregisters(registry, clock):
    registry.register("r1", "h:1", [CHAT])
    clock.advance(16)
    with pytest.raises(UnknownReplica, match="register again"):
        registry.heartbeat("r1")
    assert "r1" not in registry


def test_heartbeat_rejects_bad_in_flight(registry):
    registry.register("r1", "h:1", [CHAT])
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InvalidRegistration, match="in_flight"):
            registry.heartbeat("r1", in_flight=bad)


# -- expiry -------------------------------------------------------------------


def test_expire_removes_only_silent_replicas(registry, clock):
    registry.register("old", "h:1", [CHAT])
    clock.advance(10)
    registry.register("new", "h:2", [CHAT])
    clock.advance(5)
    assert registry.expire() == []  # exactly at the TTL is still alive
    clock.advance(0.1)
    assert registry.expire() == ["old"]
    assert "new" in registry and "old" not in registry
    assert registry.expire(now=clock.now + 100) == ["new"]


def test_past_ttl_replicas_are_no_candidates_before_the_sweep(registry, clock, matcher):
    registry.register("r1", "h:1", [CHAT])
    clock.advance(16)
    assert candidates(registry, CHAT, matcher) == []
    assert registry.known_capabilities() == []
    [entry] = registry.snapshot()
    assert entry["healthy"] is False
    assert entry["last_heartbeat_age_s"] == 16


def test_now_parameters_override_the_clock(clock):
    registry = ReplicaRegistry(ttl_seconds=2, clock=clock)
    registry.register("r1", "h:1", [CHAT], now=0.0)
    registry.heartbeat("r1", now=1.0)
    assert registry.expire(now=3.0) == []
    assert registry.expire(now=3.5) == ["r1"]


def test_ttl_must_be_positive():
    for bad in (0, -1, "15", True):
        with pytest.raises(ValueError, match="ttl_seconds"):
            ReplicaRegistry(ttl_seconds=bad)


# -- snapshot and known capabilities ----------------------------------------------


def test_snapshot_is_json_ready(registry, clock):
    registry.register("b", "h:2", [{**CHAT, "state": "cold", "stream": True}])
    registry.register("a", "h:1", [EMBED], link="tcp://h:3")
    clock.advance(3)
    with registry.acquire("a"):
        snap = registry.snapshot()
    assert [e["replica_id"] for e in snap] == ["a", "b"]
    assert snap[1]["link"] is None
    assert snap[0] == {
        "replica_id": "a",
        "endpoint": "h:1",
        "link": "tcp://h:3",
        "capabilities": [EMBED],
        "healthy": True,
        "last_heartbeat_age_s": 3.0,
        "in_flight": 1,
        "router_in_flight": 1,
        "reported_in_flight": 0,
        "registered_at": 1_700_000_000.0,
    }
    assert snap[1]["capabilities"] == [{**CHAT, "stream": True, "state": "cold"}]


def test_known_capabilities_are_distinct_and_without_runtime_keys(registry):
    registry.register("r1", "h:1", [CHAT, EMBED])
    registry.register("r2", "h:2", [{**CHAT, "state": "cold"}])
    known = registry.known_capabilities()
    assert len(known) == 2
    assert CHAT in known and EMBED in known


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replica_id", "match"),
    [("", "non-empty string"), ("   ", "non-empty string"), (None, "non-empty string"), ("a b", "whitespace")],
)
def test_bad_replica_id(registry, replica_id, match):
    with pytest.raises(InvalidRegistration, match=match):
        registry.register(replica_id, "h:1", [CHAT])


@pytest.mark.parametrize(
    "endpoint",
    [
        "",
        "localhost",
        ":50051",
        "host:",
        "host:0",
        "host:65536",
        "host:port",
        "http://host:80",
        "host/x:80",
        "::1:50051",
        "[]:80",
        "h ost:80",
        None,
        50051,
    ],
)
def test_bad_endpoint(registry, endpoint):
    with pytest.raises(InvalidRegistration, match="endpoint"):
        registry.register("r1", endpoint, [CHAT])


@pytest.mark.parametrize("endpoint", ["localhost:50051", "10.0.0.5:1", "[::1]:65535", "replica-3.svc.local:8001"])
def test_good_endpoint(registry, endpoint):
    assert registry.register("r1", endpoint, [CHAT]).endpoint == endpoint
    registry.deregister("r1")


@pytest.mark.parametrize("link", ["127.0.0.1:7000", "tcp://", "tcp://h", "tcp://h:0", "://h:1", "t cp://h:1", 7000])
def test_bad_link_is_refused_with_its_shape(registry, link):
    with pytest.raises(InvalidRegistration, match="link"):
        registry.register("r1", "h:1", [CHAT], link=link)


def test_link_is_kept_and_replaced_on_reregistration(registry, matcher):
    registry.register("r1", "h:1", [CHAT], link="tcp://h:2")
    assert [c.info["link"] for c in candidates(registry, {"type": "chat"}, matcher)] == ["tcp://h:2"]
    registry.register("r1", "h:1", [CHAT])
    assert registry.get("r1").link is None


@pytest.mark.parametrize(
    ("capabilities", "match"),
    [
        ({"type": "chat"}, "must be a list of objects"),
        ("type=chat", "must be a list of objects"),
        (None, "must be a list of objects"),
        (["chat"], r"capabilities\[0\] must be an object"),
        ([{}], r"capabilities\[0\] has no attributes"),
        ([CHAT, {"state": "hot"}], r"capabilities\[1\] has no attributes"),
        ([{"type": ["chat"]}], r"capabilities\[0\]\.type must be a string, number or boolean"),
        ([{"type": None}], r"must be a string, number or boolean"),
        ([{"type": {"a": 1}}], r"must be a string, number or boolean"),
        ([{"": "x"}], "empty or non-string key"),
        ([{1: "x"}], "empty or non-string key"),
        ([{"Type": "chat", "type": "embed"}], "differ only in case"),
        ([{"type": "chat", "state": "warm"}], "state must be one of hot, starting, cold"),
        ([{"type": "chat", "stream": "yes"}], "stream must be true or false"),
    ],
)
def test_bad_capabilities(registry, capabilities, match):
    with pytest.raises(InvalidRegistration, match=match) as info:
        registry.register("r1", "h:1", capabilities)
    # Both a ValueError and anyserve's INVALID_ARGUMENT, so HTTP maps it to 400.
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidRequest)
    assert info.value.code == "INVALID_ARGUMENT"
    assert "r1" not in registry


def test_bad_reregistration_keeps_the_old_entry(registry, matcher):
    registry.register("r1", "h:1", [CHAT])
    with pytest.raises(InvalidRegistration):
        registry.register("r1", "h:1", [{"type": []}])
    assert [c.id for c in candidates(registry, CHAT, matcher)] == ["r1"]


def test_a_replica_may_register_before_it_offers_anything(registry, matcher):
    registry.register("r1", "h:1", [])
    assert candidates(registry, {}, matcher) == []
    assert registry.snapshot()[0]["capabilities"] == []


def test_stream_filter_keeps_offers_of_the_right_kind(registry, matcher):
    registry.register("unary", "h:1", [{"type": "chat", "stream": False}])
    registry.register("streaming", "h:2", [{"type": "chat", "stream": True}])
    registry.register("plain", "h:3", [{"type": "chat"}])  # no stream key: a plain (unary) handler
    ids = lambda **kw: sorted(c.id for c in candidates(registry, {"type": "chat"}, matcher, **kw))  # noqa: E731
    assert ids() == ["plain", "streaming", "unary"]
    assert ids(stream=True) == ["streaming"]
    assert ids(stream=False) == ["plain", "unary"]


def test_endpoints_and_live_ids(registry, clock):
    registry.register("r1", "h:1", [CHAT])
    clock.advance(10)
    registry.register("r2", "h:2", [CHAT])
    clock.advance(10)
    assert registry.addresses() == {"h:1", "h:2"}
    assert registry.live_ids() == ["r2"]


def test_what_a_silent_replica_offered_is_remembered_for_a_while(registry, clock):
    """Expired (not deregistered) replicas' offers are kept ``offer_memory_seconds``: "not now" rather than 404."""
    registry.offer_memory_seconds = 60
    registry.register("silent", "127.0.0.1:1", [CHAT])
    registry.register("leaving", "127.0.0.1:2", [EMBED])
    registry.deregister("leaving")
    clock.advance(16)
    assert registry.expire() == ["silent"]
    ((replica_id, gone_at, offers),) = registry.recent_offers()
    assert (replica_id, gone_at) == ("silent", clock.now) and [o.capability.to_dict() for o in offers] == [CHAT]
    clock.advance(61)
    registry.expire()
    assert registry.recent_offers() == []


def test_listeners_hear_of_every_replica_that_leaves_however_it_leaves(registry, clock):
    gone: list[str] = []
    registry.on_gone.append(gone.append)
    for port, rid in enumerate(("bye", "silent", "swept"), start=9001):
        registry.register(rid, f"127.0.0.1:{port}", [{"type": "chat"}])
    registry.deregister("bye")
    assert gone == ["bye"]
    clock.advance(registry.ttl_seconds + 1)
    with pytest.raises(UnknownReplica):
        registry.heartbeat("silent")  # found silent on its next heartbeat: gone before the sweep came
    assert gone == ["bye", "silent"]
    assert registry.expire() == ["swept"]
    assert gone == ["bye", "silent", "swept"]
    with pytest.raises(UnknownReplica):
        registry.heartbeat("never-was")
    assert gone == ["bye", "silent", "swept"]


def test_past_max_replicas_a_new_id_waits_for_a_place(clock):
    registry = ReplicaRegistry(15, clock=clock, limits=RegistrationLimits(max_replicas=2))
    gone: list[str] = []
    registry.on_gone.append(gone.append)
    registry.register("a", "127.0.0.1:9001", [{"type": "chat"}])
    clock.advance(10)
    registry.register("b", "127.0.0.1:9002", [{"type": "chat"}])
    with pytest.raises(RegistryFull, match=r"holds 2 replicas \(router.max_replicas\)") as info:
        registry.register("c", "127.0.0.1:9003", [{"type": "chat"}])
    assert info.value.code == "UNAVAILABLE"
    registry.register("b", "127.0.0.1:9002", [{"type": "embed"}])  # a holder may always register again
    clock.advance(6)  # "a" is silent past its TTL, not swept yet: it makes room
    registry.register("c", "127.0.0.1:9003", [{"type": "chat"}])
    assert sorted(registry.live_ids()) == ["b", "c"] and gone == ["a"]
