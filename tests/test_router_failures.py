"""The router end to end when things go wrong: dead replicas, silent replicas, bad bodies.

After every failure the router must keep serving, so each test ends with a
request that works.
"""

from __future__ import annotations

import time

import pytest
from router_http import ECHO_APP, output, register, tensor

ECHO = {"X-Capability-Type": "echo"}
ADD = {"X-Capability-Type": "add"}
GOOD_ADD = {"inputs": [tensor("a", "INT64", [1]), tensor("b", "INT64", [2])]}


def test_a_killed_replica_is_skipped_once_then_502_when_none_is_left(start_router, start_replica, http_to, data_path):
    router = start_router()
    http = http_to(router.url)
    first, second = start_replica("echo_app:app", transport="inproc"), start_replica("echo_app:app", transport="inproc")
    for replica_id, replica in (("first", first), ("second", second)):
        register(http, replica_id, replica.endpoint, ECHO_APP, replica.link if data_path == "link" else None)
    first.process.kill_group()
    for _ in range(10):  # whichever the router picks, the live one answers
        response = http.post("/infer", json={"inputs": []}, headers=ECHO)
        assert response.status_code == 200, response.text
        assert response.headers["X-Served-By"] == "second"
    second.process.kill_group()
    response = http.post("/infer", json={"inputs": []}, headers=ECHO)
    assert response.status_code == 502
    message = response.json()["error"]
    assert "did not answer" in message and response.headers["X-Request-Id"] in message
    assert "'first'" not in message and "'second'" not in message  # replica ids are for the router's log
    # the router itself is fine, and a replica that comes back is used again
    assert http.get("/health").status_code == 200
    revived = start_replica("echo_app:app", transport="inproc")
    register(http, "revived", revived.endpoint, ECHO_APP, revived.link if data_path == "link" else None)
    http.delete("/register/first")
    http.delete("/register/second")
    assert http.post("/infer", json={"inputs": []}, headers=ECHO).headers["X-Served-By"] == "revived"


def test_a_replica_that_stops_heartbeating_expires(start_router, start_replica, http_to, tmp_path):
    config = tmp_path / "anyserve.toml"
    config.write_text("[router]\ncapacity_wait_seconds = 0.2\n")
    router = start_router("--ttl-seconds", "1", "--config", str(config))
    http = http_to(router.url)
    replica = start_replica("echo_app:app", transport="inproc")
    terms = register(http, "r1", replica.endpoint, ECHO_APP)
    assert terms["ttl_seconds"] == 1.0 and terms["heartbeat_seconds"] == pytest.approx(1 / 3)
    # heartbeats keep it alive past several TTLs
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert http.post("/heartbeat", json={"replica_id": "r1", "in_flight": 0}).status_code == 200
        time.sleep(0.2)
    assert http.post("/infer", json={"inputs": []}, headers=ECHO).status_code == 200
    # silence: swept within ttl + ttl/3, then unknown to heartbeats and to routing
    deadline = time.monotonic() + 5.0
    while http.get("/registry").json()["replicas"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http.get("/registry").json()["replicas"] == []
    assert "expired 1 replica(s)" in router.process.output()
    assert http.post("/heartbeat", json={"replica_id": "r1", "in_flight": 0}).status_code == 404
    gone = http.post("/infer", json={"inputs": []}, headers=ECHO)  # what it offered is remembered: "not now"
    assert gone.status_code == 503 and gone.headers["Retry-After"] == "1" and "went silent" in gone.json()["error"]
    register(http, "r1", replica.endpoint, ECHO_APP)  # what a replica told 404 does
    assert http.post("/infer", json={"inputs": []}, headers=ECHO).status_code == 200


BAD_BODIES = [
    (b'{"inputs": [', ("not valid JSON",)),
    (b'["not", "an", "object"]', ("must be a JSON object",)),
    (
        b'{"inputs": [{"name": "a", "shape": [3], "datatype": "INT64", "data": [1, 2]}]}',
        ("input 'a'", "shape [3] holds 3"),
    ),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "INT128", "data": [1]}]}', ("input 'a'", "'INT128'")),
    (
        b'{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": ["one"]}]}',
        ("input 'a'", 'data[0] = "one"'),
    ),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "BOOL", "data": [1]}]}', ("input 'a'", "a boolean")),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [999]}]}', ("input 'a'", "out of range")),
]


def test_bad_bodies_are_400_naming_the_problem_and_the_router_keeps_serving(start_router, start_replica, http_to):
    router = start_router()
    http = http_to(router.url)
    register(http, "r1", start_replica("echo_app:app", transport="inproc").endpoint, ECHO_APP)
    for body, fragments in BAD_BODIES:
        response = http.post("/infer", content=body, headers={**ADD, "Content-Type": "application/json"})
        assert response.status_code == 400, (body, response.text)
        for fragment in fragments:
            assert fragment in response.json()["error"], (body, response.text)
        assert output(http.post("/infer", json=GOOD_ADD, headers=ADD).json(), "sum") == [3]


def test_oversized_bodies_are_413_and_other_errors_keep_their_status(start_router, start_replica, http_to, tmp_path):
    config = tmp_path / "anyserve.toml"
    config.write_text("[router]\nmax_body_bytes = 4096\n")
    router = start_router("--config", str(config))
    http = http_to(router.url)
    register(http, "r1", start_replica("echo_app:app", transport="inproc").endpoint, ECHO_APP)
    big = {"inputs": [tensor("t", "BYTES", ["x" * 8192])]}
    response = http.post("/infer", json=big, headers=ECHO)
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"] and "router.max_body_bytes" in response.json()["error"]
    chunked = http.post("/infer", content=iter([b"{" * 1024] * 8), headers=ECHO)
    assert chunked.status_code == 413
    assert http.post("/infer", json={"inputs": []}).status_code == 400  # no capability
    boom = http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "boom"})
    assert boom.status_code == 500 and "the handler failed on purpose" in boom.json()["error"]
    assert boom.headers["X-Served-By"] == "r1"
    assert output(http.post("/infer", json=GOOD_ADD, headers=ADD).json(), "sum") == [3]
