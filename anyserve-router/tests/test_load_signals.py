"""Load signals at the router: what a heartbeat may carry, what is kept, and what routing then reads.

The registry on a clock the test moves (conftest.py), and the heartbeat
endpoint of the app in process (its upstream faked: these tests are not
about the data path).
"""

from __future__ import annotations

import math

import pytest
from grpc.aio import Metadata

from anyserve.protocol.names import LOAD_KEY
from anyserve_router.errors import InvalidRegistration, WrongReplicaKey
from anyserve_router.load_reports import MAX_COUNT, piggy_backed
from anyserve_router.registry import ReplicaRegistry
from anyserve_router.selection import candidates
from anyserve_router.upstream import GrpcUpstream

CHAT = {"type": "chat", "model": "llama"}
EMBED = {"type": "embed"}


def offer(capability: dict, stream: bool = False, **signals: object) -> dict:
    return {"capability": capability, "stream": stream, **signals}


def test_a_heartbeat_replaces_the_signals_and_candidates_read_them_overlaid(registry, matcher):
    registry.register("r1", "10.0.0.1:1", [CHAT, {**CHAT, "stream": True}], key="k")
    report = {
        "draining": False,
        "queued": 1,
        "in_flight": 3,
        "offers": [offer(CHAT, queued=2, slots=4, service_seconds=0.5), offer(CHAT, True, queued=7)],
    }
    registry.heartbeat("r1", 3, key="k", signals=report)
    entry = registry.get("r1")
    assert entry.signals == {"draining": False, "queued": 1, "in_flight": 3}
    (unary,) = candidates(registry, {"type": "chat"}, matcher, stream=False)
    assert unary.signals == {"draining": False, "queued": 2, "in_flight": 3, "slots": 4, "service_seconds": 0.5}
    assert unary.load == entry.load + 2  # a queued request counts twice
    (streaming,) = candidates(registry, {"type": "chat"}, matcher, stream=True)
    assert streaming.signals["queued"] == 7
    # the next report replaces the last one whole: what it leaves out is gone
    registry.heartbeat("r1", 0, key="k", signals={"queued": 0})
    assert registry.get("r1").signals == {"queued": 0} and registry.get("r1").offer_signals == {}


def test_offers_are_named_as_registered_runtime_keys_and_case_aside(registry, matcher):
    registry.register("r1", "10.0.0.1:1", [{"type": "chat", "model": "llama", "state": "cold"}], key="k")
    named = {"Type": "chat", "MODEL": "llama", "state": "cold"}  # keys as another client may spell them
    registry.heartbeat("r1", key="k", signals={"offers": [offer(named, load_seconds=12.5, fits=False)]})
    (found,) = candidates(registry, CHAT, matcher)
    assert found.state == "cold" and found.signals == {"load_seconds": 12.5, "fits": False}
    # kept under the capability as registered, not as the report spelled it
    (listed,) = registry.snapshot()[0]["offer_signals"]
    assert listed == {"capability": CHAT, "stream": False, "load_seconds": 12.5, "fits": False}
    registry.register("r2", "10.0.0.1:2", [{"type": "embed", "dims": 384}], key="k")
    registry.heartbeat("r2", key="k", signals={"offers": [offer({"type": "embed", "dims": "384"}, queued=1)]})
    assert registry.snapshot()[1]["offer_signals"][0]["capability"] == {"type": "embed", "dims": 384}


def test_unknown_names_and_offers_the_replica_does_not_have_are_not_kept(registry):
    registry.register("r1", "10.0.0.1:1", [CHAT], key="k")
    report = {"queued": 1, "mood": "sunny", "offers": [offer(CHAT, tokens=5, queued=1), offer(EMBED, queued=9)]}
    registry.heartbeat("r1", key="k", signals=report)
    entry = registry.get("r1")
    assert entry.signals == {"queued": 1}
    assert list(entry.offer_signals.values()) == [{"queued": 1}]


BAD = [
    ([], "signals must be a JSON object"),
    ({"queued": -1}, "signals.queued must be an integer"),
    ({"queued": 1.5}, "signals.queued must be an integer"),
    ({"queued": True}, "signals.queued must be an integer"),
    ({"in_flight": MAX_COUNT + 1}, "signals.in_flight must be an integer"),
    ({"draining": 1}, "signals.draining must be true or false"),
    ({"cache_use": 1.5}, "signals.cache_use must be a number from 0 to 1"),
    ({"cache_use": math.nan}, "signals.cache_use must be a number from 0 to 1"),
    ({"resident": "llama"}, "signals.resident must be a list"),
    ({"resident": ["a", 3]}, "signals.resident[1] must be a non-empty string"),
    ({"offers": {}}, "signals.offers must be a list"),
    ({"offers": [3]}, "signals.offers[0] must be an object"),
    ({"offers": [{"stream": False}]}, "signals.offers[0].capability must be"),
    ({"offers": [offer({"stream": True})]}, "signals.offers[0].capability has no attributes"),
    ({"offers": [offer(CHAT, "yes")]}, "signals.offers[0].stream must be true or false"),
    ({"offers": [offer(CHAT), offer(CHAT, service_seconds=math.inf)]}, "signals.offers[1].service_seconds"),
    ({"offers": [offer(CHAT, load_seconds=-2)]}, "signals.offers[0].load_seconds must be from 0"),
    ({"offers": [offer(CHAT, fits="no")]}, "signals.offers[0].fits must be true or false"),
]


@pytest.mark.parametrize(("signals", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_report_is_refused_naming_the_field_and_nothing_is_kept(registry, clock, signals, message):
    registry.register("r1", "10.0.0.1:1", [CHAT], key="k")
    registry.heartbeat("r1", 2, key="k", signals={"queued": 4})
    before = registry.get("r1")
    clock.advance(5)
    with pytest.raises(InvalidRegistration, match=message.replace("[", r"\[").replace("]", r"\]")):
        registry.heartbeat("r1", 9, key="k", signals=signals)
    after = registry.get("r1")
    assert (after.signals, after.reported_in_flight, after.last_heartbeat) == (
        before.signals,
        before.reported_in_flight,
        before.last_heartbeat,
    )


def test_offer_entries_are_bounded_as_registrations_are(clock):
    registry = ReplicaRegistry(ttl_seconds=15, clock=clock)
    registry.limits = type(registry.limits)(max_capabilities=2)
    registry.register("r1", "10.0.0.1:1", [CHAT], key="k")
    with pytest.raises(InvalidRegistration, match=r"signals.offers lists 3 entries; at most 2.*max_capabilities"):
        registry.heartbeat("r1", key="k", signals={"offers": [offer(CHAT)] * 3})


def test_an_engines_signals_are_replaced_by_its_owner_only(registry):
    registry.register("e1", "10.0.0.1:1", [CHAT], key="engine-key")
    registry.report("e1", {"running": 2, "slots": 4}, key="engine-key")
    assert registry.get("e1").signals == {"running": 2, "slots": 4}
    with pytest.raises(WrongReplicaKey):
        registry.report("e1", {"running": 0}, key="other")
    assert registry.get("e1").signals == {"running": 2, "slots": 4}


def test_load_carried_by_a_response_updates_the_replica_wide_figures_only(registry):
    registry.register("r1", "10.0.0.1:1", [CHAT], key="k")
    registry.heartbeat("r1", key="k", signals={"draining": False, "queued": 0, "offers": [offer(CHAT, slots=2)]})
    kept = registry.get("r1").signals
    registry.note_load("r1", 3, 5)
    assert registry.get("r1").signals == {"draining": False, "queued": 3, "in_flight": 5}
    assert kept == {"draining": False, "queued": 0}  # a new dict: one read without the lock never changes
    assert list(registry.get("r1").offer_signals.values()) == [{"slots": 2}]
    registry.note_load("gone", 1, 1)  # a replica that left meanwhile: nothing to do, nothing raised


@pytest.mark.parametrize(
    ("value", "load"),
    [("0,0", (0, 0)), ("3,12", (3, 12)), ("", None), ("3", None), ("a,1", None), ("-1,2", None),
     (f"1,{MAX_COUNT + 1}", None), ("1," + "9" * 40, None)],
)  # fmt: skip
def test_piggy_backed_load_is_two_small_counts(value, load):
    assert piggy_backed(value) == load


def test_the_grpc_upstream_hands_trailing_load_to_its_sink():
    heard: list[tuple[str, int, int]] = []
    upstream = GrpcUpstream()
    upstream.heard("r1", Metadata((LOAD_KEY, "2,7")))  # no sink yet: nothing read
    upstream.report_load(lambda *load: heard.append(load))
    upstream.heard("r1", Metadata(("other", "x"), (LOAD_KEY, "2,7")))
    upstream.heard("r1", Metadata((LOAD_KEY, "not,numbers")))
    upstream.heard("r1", Metadata())
    upstream.heard("r1", None)
    assert heard == [("r1", 2, 7)]
    upstream.heard_value("r2", "1," + "9" * 10_000)  # a link frame's value from a broken or hostile replica
    assert heard == [("r1", 2, 7)] and "r2" not in upstream._last
    upstream.heard_value("r2", "0,3")
    assert heard == [("r1", 2, 7), ("r2", 0, 3)]


# -- over HTTP ---------------------------------------------------------------------


def test_the_heartbeat_endpoint_keeps_good_signals_and_the_registry_shows_them(client, register):
    register(client, "r1", "127.0.0.1:5001", CHAT)
    signals = {"draining": False, "queued": 1, "in_flight": 2, "offers": [offer(CHAT, queued=1, slots=2)]}
    answer = client.post("/heartbeat", json={"replica_id": "r1", "in_flight": 2, "signals": signals})
    assert answer.status_code == 200, answer.text
    (entry,) = client.get("/registry").json()["replicas"]
    assert entry["signals"] == {"draining": False, "queued": 1, "in_flight": 2}
    assert entry["offer_signals"] == [{"capability": CHAT, "stream": False, "queued": 1, "slots": 2}]


def test_a_bad_heartbeat_signal_is_a_400_naming_it_and_nothing_is_stored(client, register):
    register(client, "r1", "127.0.0.1:5001", CHAT)
    good = {"queued": 1, "offers": [offer(CHAT, slots=2)]}
    assert client.post("/heartbeat", json={"replica_id": "r1", "signals": good}).status_code == 200
    for bad, field in [
        ({"queued": "many"}, "signals.queued"),
        ({"offers": [offer(CHAT, service_seconds=-1)]}, "signals.offers[0].service_seconds"),
        ({"offers": [{"capability": {"type": "x" * 300}}]}, "signals.offers[0].capability"),
        ("queued", "signals must be a JSON object"),
    ]:
        answer = client.post("/heartbeat", json={"replica_id": "r1", "in_flight": 5, "signals": bad})
        assert answer.status_code == 400, answer.text
        assert field in answer.json()["error"] and answer.json()["code"] == "INVALID_ARGUMENT"
    (entry,) = client.get("/registry").json()["replicas"]
    assert entry["signals"] == {"queued": 1} and entry["reported_in_flight"] == 0
    assert entry["offer_signals"] == [{"capability": CHAT, "stream": False, "slots": 2}]


def test_a_heartbeat_body_is_bounded_by_the_registration_limit(make_client, register):
    client = make_client(max_registration_bytes=4096)
    register(client, "r1", "127.0.0.1:5001", CHAT)
    signals = {"offers": [offer({"type": "chat", "model": f"m{i}"}) for i in range(200)]}
    answer = client.post("/heartbeat", json={"replica_id": "r1", "signals": signals})
    assert answer.status_code == 413 and "router.max_registration_bytes" in answer.json()["error"]
    assert "signals" not in client.get("/registry").json()["replicas"][0]
