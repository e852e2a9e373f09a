"""Hostile registrations, heartbeats and deregistrations: each a 400 naming the field, never a 500 or a bad listing."""

from __future__ import annotations

import json

import pytest

from anyserve_router.endpoints import AddressPolicy, check_endpoint
from anyserve_router.errors import InvalidRegistration
from anyserve_router.offers import check_capabilities, check_replica_id

JSON = {"Content-Type": "application/json"}


def registration(**fields: object) -> dict[str, object]:
    return {"replica_id": "r1", "endpoint": "127.0.0.1:5001", "capabilities": [{"type": "chat"}], **fields}


def nested(depth: int) -> list[object]:
    value: list[object] = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


def strict_json(text: str) -> object:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} in a listing")

    return json.loads(text, parse_constant=refuse)


BAD_REGISTRATIONS = [
    (registration(replica_id=[1]), "replica_id must be a non-empty string, got"),
    (registration(replica_id="a\x00b"), "at most 128 letters"),
    (registration(replica_id="x" * 200_000), "at most 128 letters"),
    (registration(replica_id="r/1"), "at most 128 letters"),
    (registration(endpoint="169.254.169.254:80"), "link-local"),
    (registration(endpoint="[fe80::1]:80"), "link-local"),
    (registration(endpoint="[::ffff:169.254.169.254]:80"), "link-local"),
    (registration(endpoint="0.0.0.0:80"), "unspecified"),
    (registration(endpoint="[::]:80"), "unspecified"),
    (registration(endpoint="224.0.0.1:80"), "multicast"),
    (registration(endpoint="metadata.google.internal:80"), "metadata"),
    (registration(endpoint="2852039166:80"), "non-standard form"),
    (registration(endpoint="0xa9fea9fe:80"), "non-standard form"),
    (registration(endpoint="h\x00st:80"), "not a bare host:port"),
    (registration(endpoint="host..name:80"), "invalid host"),
    (registration(endpoint=["h", 1]), "endpoint must be a string"),
    (registration(link="tcp://169.254.169.254:80"), "link 'tcp://169.254.169.254:80'"),
    (registration(capabilities=[{"type": f"t{i}"} for i in range(257)]), "at most 256"),
    (registration(capabilities=[{"k" * 300: "v"}]), "key of 300 characters"),
    (registration(capabilities=[{"type": "v" * 300}]), "capabilities[0].type has a value of 300 characters"),
    (registration(capabilities=[{"type": "a\x00b"}]), "control characters"),
    (registration(capabilities=[{f"k{i}": 1 for i in range(33)}]), "33 attributes"),
    (registration(status=[1]), "status"),
    (registration(status={"a": {"b": nested(18)}}), "nests deeper"),
]


def test_a_hostile_registration_is_a_400_naming_the_field(client):
    for body, fragment in BAD_REGISTRATIONS:
        response = client.post("/register", json=body)
        assert response.status_code == 400, (str(body)[:200], response.text)
        message = response.json()["error"]
        assert fragment in message, message
        assert len(message) < 1000  # what was sent is quoted, not echoed whole
    assert client.get("/registry").json()["replicas"] == []


def test_non_json_numbers_and_huge_integers_are_400_and_listings_stay_json(make_client, register):
    client = make_client(heartbeat_seconds=0.05)  # a fresh router waits two heartbeats before any 404
    for raw in (
        b'{"replica_id": "r1", "endpoint": "127.0.0.1:5001", "capabilities": [{"type": Infinity}]}',
        b'{"replica_id": "r1", "endpoint": "127.0.0.1:5001", "capabilities": [{"type": NaN}]}',
        b'{"replica_id": "r1", "in_flight": ' + b"9" * 5000 + b"}",
    ):
        path = "/heartbeat" if b"in_flight" in raw else "/register"
        response = client.post(path, content=raw, headers=JSON)
        assert response.status_code == 400, response.text
        assert "ValueError" not in response.text and "Traceback" not in response.text
    register(client, "r1", "127.0.0.1:5001", {"type": "chat", "score": 1e308, "big": 2**63})
    strict_json(client.get("/registry").text)
    missing = client.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "nothing-offers-this"})
    assert missing.status_code == 404
    strict_json(missing.text)


BAD_HEARTBEATS = [
    ({"replica_id": [1]}, "replica_id must be a non-empty string, got"),
    ({"replica_id": {"a": 1}}, "replica_id must be a non-empty string, got"),
    ({"replica_id": None}, "replica_id must be a non-empty string, got"),
    ({"replica_id": "r1", "in_flight": "3"}, "in_flight must be an integer"),
    ({"replica_id": "r1", "in_flight": 2**70}, "in_flight must be an integer"),
    ({"replica_id": "r1", "in_flight": 1.5}, "in_flight must be an integer"),
]


def test_a_hostile_heartbeat_is_a_400_naming_the_field(client, register):
    register(client, "r1", "127.0.0.1:5001", {"type": "chat"})
    for body, fragment in BAD_HEARTBEATS:
        response = client.post("/heartbeat", json=body)
        assert response.status_code == 400, (body, response.text)
        assert fragment in response.json()["error"]


def test_a_hostile_deregistration_is_a_400_and_unknown_ids_name_no_member(client, register):
    register(client, "secret-member-7", "127.0.0.1:5001", {"type": "chat"})
    assert client.delete("/register/bad%00id").status_code == 400
    for response in (
        client.delete("/register/ghost"),
        client.post("/heartbeat", json={"replica_id": "ghost", "in_flight": 0}),
    ):
        assert response.status_code == 404
        assert "ghost" in response.text and "secret-member-7" not in response.text


def test_a_hostile_engine_is_a_400_naming_the_field(client):
    admin = {"Authorization": f"Bearer {client.app_state.credentials.admin}"}
    for body, fragment in [
        ({"url": "http://169.254.169.254:80"}, "link-local"),
        ({"url": "http://127.0.0.1:9", "capabilities": {"a": 1}}, "capabilities must be a list"),
        ({"url": "http://127.0.0.1:9", "capabilities": 5}, "capabilities must be a list"),
        ({"url": "http://127.0.0.1:9", "types": 5}, "types must be a list"),
        ({"url": "http://127.0.0.1:9", "id": [1]}, "replica_id must be a non-empty string"),
    ]:
        response = client.post("/engines", json=body, headers=admin)
        assert response.status_code == 400, (body, response.text)
        assert fragment in response.json()["error"], response.text


def test_allowed_endpoint_networks_let_a_refused_network_in(make_client, register):
    client = make_client(allowed_endpoint_networks=["169.254.10.0/24"])
    register(client, "r1", "169.254.10.5:5001", {"type": "chat"})
    assert client.post("/register", json=registration(endpoint="169.254.169.254:80")).status_code == 400


def test_registration_bodies_have_their_own_size_limit(make_client):
    client = make_client(max_registration_bytes=4096)
    response = client.post("/register", json=registration(status={"pad": "x" * 8192}))
    assert response.status_code == 413
    assert "router.max_registration_bytes" in response.json()["error"]


def test_checks_accept_what_real_clusters_register():
    for endpoint in ("127.0.0.1:50051", "[::1]:50051", "10.0.0.5:1", "replica-3.internal:65535", "my_svc:8000"):
        assert check_endpoint(endpoint) == endpoint
    for replica_id in ("replica-3f2a9c1b", "engine-127-0-0-1-8000", "host.example:50051@gpu0"):
        assert check_replica_id(replica_id) == replica_id
    assert len(check_capabilities([{"type": "chat", "model": "m" * 256, "gpus": 2, "stream": True}])) == 1
    with pytest.raises(InvalidRegistration, match="wider than 64 bits"):
        check_capabilities([{"type": "chat", "gpus": 2**70}])
    with pytest.raises(InvalidRegistration, match="finite"):
        check_capabilities([{"type": "chat", "score": float("inf")}])
    policy = AddressPolicy.of(["fe80::/10"])
    assert check_endpoint("[fe80::1]:80", policy) == "[fe80::1]:80"
    with pytest.raises(InvalidRegistration, match="link-local"):
        check_endpoint("[fe80::1]:80")
