"""Membership, discovery and health over HTTP (the app in-process, replicas faked)."""

from __future__ import annotations

import time

import typer

from anyserve_router import plugin

CHAT = {"type": "chat", "model": "llama"}


def test_register_answers_the_lease_terms(client):
    response = client.post("/register", json={"replica_id": "r1", "endpoint": "127.0.0.1:5001", "capabilities": [CHAT]})
    assert response.status_code == 200
    assert response.json() == {"replica_id": "r1", "ttl_seconds": 15.0, "heartbeat_seconds": 0.05}
    (entry,) = client.get("/registry").json()["replicas"]
    assert entry["replica_id"] == "r1" and entry["endpoint"] == "127.0.0.1:5001"
    assert entry["capabilities"] == [CHAT]
    assert entry["healthy"] is True and entry["in_flight"] == 0 and entry["last_heartbeat_age_s"] >= 0


def test_reregister_replaces_and_other_endpoint_conflicts(client, register):
    register(client, "r1", "127.0.0.1:5001", CHAT)
    register(client, "r1", "127.0.0.1:5001", {"type": "embed"})
    assert client.get("/registry").json()["replicas"][0]["capabilities"] == [{"type": "embed"}]
    clash = client.post("/register", json={"replica_id": "r1", "endpoint": "127.0.0.1:5002", "capabilities": []})
    assert clash.status_code == 409
    assert "'r1'" in clash.json()["error"] and "127.0.0.1:5001" not in clash.json()["error"]
    assert clash.json()["code"] == "ALREADY_EXISTS"


# -- who may use the control plane ------------------------------------------------------------

STRANGER = {"Authorization": ""}  # no token at all
WRONG = {"Authorization": "Bearer not-the-cluster-token"}
ATTACKER_KEY = {"X-Anyserve-Replica-Key": "attacker"}


def test_the_control_plane_refuses_callers_without_the_cluster_token(client, register):
    register(client, "victim", "127.0.0.1:5001", CHAT)
    body = {"replica_id": "intruder", "endpoint": "127.0.0.1:6666", "capabilities": [CHAT]}
    for headers in (STRANGER, WRONG):
        answers = [
            client.post("/register", json=body, headers=headers),
            client.post("/heartbeat", json={"replica_id": "victim", "in_flight": 10**6}, headers=headers),
            client.delete("/register/victim", headers=headers),
        ]
        for answer in answers:
            assert answer.status_code == 401, answer.text
            assert answer.json()["code"] == "UNAUTHENTICATED" and "cluster token" in answer.json()["error"]
    (entry,) = client.get("/registry").json()["replicas"]
    assert entry["replica_id"] == "victim" and entry["reported_in_flight"] == 0


def test_a_member_cannot_take_over_another_replicas_id(client, register):
    """The takeover once possible without credentials: delete the victim's entry, register its id elsewhere."""
    register(client, "victim", "127.0.0.1:5001", CHAT)
    assert client.delete("/register/victim", headers=ATTACKER_KEY).status_code == 403
    hijack = {"replica_id": "victim", "endpoint": "127.0.0.1:6666", "capabilities": [CHAT]}
    assert client.post("/register", json=hijack, headers=ATTACKER_KEY).status_code == 409
    same_place = {**hijack, "endpoint": "127.0.0.1:5001", "link": "tcp://127.0.0.1:6666"}
    assert client.post("/register", json=same_place, headers=ATTACKER_KEY).status_code == 409
    spoof = client.post("/heartbeat", json={"replica_id": "victim", "in_flight": 10**6}, headers=ATTACKER_KEY)
    assert spoof.status_code == 403 and spoof.json()["code"] == "PERMISSION_DENIED"
    (entry,) = client.get("/registry").json()["replicas"]
    assert entry["endpoint"] == "127.0.0.1:5001" and entry["link"] is None and entry["reported_in_flight"] == 0
    # a registration must carry a key of its own
    keyless = client.post("/register", json=hijack | {"replica_id": "new"}, headers={"X-Anyserve-Replica-Key": ""})
    assert keyless.status_code == 400 and "X-Anyserve-Replica-Key" in keyless.json()["error"]
    # the admin token removes any replica
    admin = client.app_state.credentials.admin
    assert client.delete("/register/victim", headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_engines_are_managed_with_the_admin_token_only(client):
    body = {"url": "http://127.0.0.1:9", "id": "e1"}
    assert client.post("/engines", json=body, headers=STRANGER).status_code == 401
    member = client.post("/engines", json=body)  # the cluster token is not enough
    assert member.status_code == 403 and "admin token" in member.json()["error"]
    assert client.get("/engines").status_code == 403
    admin = {"Authorization": f"Bearer {client.app_state.credentials.admin}"}
    assert client.post("/engines", json=body, headers=admin).status_code == 200
    assert [e["id"] for e in client.get("/engines", headers=admin).json()["engines"]] == ["e1"]
    assert client.delete("/engines/e1", headers=admin).status_code == 200


def test_bad_registrations_are_400_with_a_message(client):
    cases = [
        (b"{oops", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"replica_id": "r1"}', "missing 'endpoint', 'capabilities'"),
        (b'{"replica_id": "r1", "endpoint": "nowhere", "capabilities": []}', "host:port"),
        (b'{"replica_id": "r 1", "endpoint": "h:1", "capabilities": []}', "whitespace"),
        (b'{"replica_id": "r1", "endpoint": "h:1", "capabilities": {"type": "x"}}', "must be a list"),
        (b'{"replica_id": "r1", "endpoint": "h:1", "capabilities": [{"type": [1]}]}', "capabilities[0].type"),
    ]
    for body, fragment in cases:
        response = client.post("/register", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (body, response.text)
        assert fragment in response.json()["error"], (body, response.text)
    assert client.get("/registry").json()["replicas"] == []


def test_heartbeat_and_deregister(client, register):
    register(client, "r1", "127.0.0.1:5001", CHAT)
    beat = client.post("/heartbeat", json={"replica_id": "r1", "in_flight": 3})
    assert beat.status_code == 200 and beat.json()["heartbeat_seconds"] == 0.05
    assert client.get("/registry").json()["replicas"][0]["reported_in_flight"] == 3
    assert client.post("/heartbeat", json={"replica_id": "r1", "in_flight": -1}).status_code == 400
    assert client.post("/heartbeat", json={"in_flight": 1}).status_code == 400
    unknown = client.post("/heartbeat", json={"replica_id": "ghost", "in_flight": 0})
    assert unknown.status_code == 404 and "ghost" in unknown.json()["error"]
    assert "register again" in unknown.json()["error"]
    assert client.delete("/register/r1").status_code == 200
    gone = client.delete("/register/r1")
    assert gone.status_code == 404 and "'r1'" in gone.json()["error"]
    assert client.post("/heartbeat", json={"replica_id": "r1"}).status_code == 404


def test_health_and_kserve_probes(client, register):
    assert client.get("/health").json() == {"status": "ok", "replicas": 0}
    assert client.get("/v2/health/live").status_code == 200
    not_ready = client.get("/v2/health/ready")
    assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
    register(client, "r1", "127.0.0.1:5001", CHAT)
    assert client.get("/health").json() == {"status": "ok", "replicas": 1}
    assert client.get("/v2/health/ready").json()["ready"] is True
    assert client.get("/v2").json()["name"] == "anyserve-router"
    assert client.get("/v2/models/chat/ready").status_code == 200
    assert client.get("/v2/models/chat/versions/llama/ready").status_code == 200
    assert client.get("/v2/models/chat/versions/other/ready").status_code == 404
    missing = client.get("/no/such/path")
    assert missing.status_code == 404 and "error" in missing.json()


def test_lookup_by_query_string_or_headers(client, register):
    register(client, "r1", "127.0.0.1:5001", CHAT)
    register(client, "r2", "127.0.0.1:5002", {"type": "embed", "model-family": "mini"})
    assert client.get("/lookup", params={"type": "chat", "model": "llama"}).json() == {
        "replica_id": "r1",
        "endpoint": "127.0.0.1:5001",
    }
    by_header = client.get("/lookup", headers={"X-Capability-Type": "embed", "X-Capability-Model-Family": "mini"})
    assert by_header.json()["replica_id"] == "r2"
    missing = client.get("/lookup", params={"type": "tts"})
    assert missing.status_code == 404 and '"type":"tts"' in missing.json()["error"]
    assert client.get("/lookup").status_code == 400


def test_silent_replicas_are_swept(make_client, register):
    client = make_client(ttl_seconds=0.3)
    register(client, "r1", "127.0.0.1:5001", CHAT)
    deadline = time.monotonic() + 5
    while client.get("/registry").json()["replicas"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/registry").json()["replicas"] == []
    assert client.post("/heartbeat", json={"replica_id": "r1"}).status_code == 404


def test_the_router_command_is_contributed_through_the_cli_hook():
    cli = typer.Typer()
    plugin.anyserve_register_commands(cli)
    assert [c.name for c in cli.registered_commands] == ["router"]
