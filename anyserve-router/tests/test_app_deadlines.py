"""Deadlines and capacity at the router, with the replicas faked at the upstream interface.

A replica that never answers costs a request its deadline (504), whatever
the client; "not now" (a failed offer, a silent replica, a router that just
started) waits for capacity, then is a 503 with Retry-After; "nobody" is a 404.
"""

from __future__ import annotations

import asyncio
import threading
import time

A, B = "127.0.0.1:5001", "127.0.0.1:5002"
BODY = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]}
ECHO = {"X-Capability-Type": "echo"}
#: What a test server's request may take beyond its deadline (the router looks every 50 ms).
SLACK = 1.0


def stall(upstream) -> None:
    """Make every unary call hang, as a stopped replica does."""

    async def infer(target, payload, metadata):
        upstream._record(target, payload, metadata)
        await asyncio.Event().wait()

    upstream.infer = infer


def test_a_replica_that_never_answers_is_a_504_at_the_clients_deadline(make_client, register, upstream):
    client = make_client()
    register(client, "r", A, {"type": "echo"})
    stall(upstream)
    began = time.monotonic()
    response = client.post("/infer", json=BODY, headers={**ECHO, "X-Request-Timeout": "0.3"})
    took = time.monotonic() - began
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "DEADLINE_EXCEEDED" and "the client's" in response.json()["error"]
    assert 0.3 <= took < 0.3 + SLACK
    assert 0 < float(upstream.timeouts[-1]) <= 0.3  # what was left travelled with the request


def test_without_a_client_deadline_the_default_applies(make_client, register, upstream):
    client = make_client(default_deadline_seconds=0.2)
    register(client, "r", A, {"type": "echo"})
    assert client.post("/infer", json=BODY, headers=ECHO).status_code == 200
    assert 0 < float(upstream.timeouts[-1]) <= 0.2
    stall(upstream)
    response = client.post("/infer", json=BODY, headers=ECHO)
    assert response.status_code == 504 and "router.default_deadline_seconds" in response.json()["error"]


def test_the_openai_sdk_timeout_is_the_deadline_when_no_other_is_given(make_client, register, upstream):
    client = make_client()
    register(client, "r", A, {"type": "echo"})
    client.post("/infer", json=BODY, headers={**ECHO, "X-Stainless-Read-Timeout": "42.0"})
    assert 41 < float(upstream.timeouts[-1]) <= 42
    client.post("/infer", json=BODY, headers={**ECHO, "X-Stainless-Read-Timeout": "42", "X-Request-Timeout": "7"})
    assert 6 < float(upstream.timeouts[-1]) <= 7


def test_a_failed_offer_waits_for_capacity_then_is_a_503(make_client, register, upstream):
    client = make_client(capacity_wait_seconds=0.2)
    register(client, "r", A, {"type": "chat", "state": "failed"})
    response = client.post("/infer", json=BODY, headers={"X-Capability-Type": "chat"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1", response.text
    assert response.json()["code"] == "UNAVAILABLE" and "failed" in response.json()["error"]
    assert upstream.calls == []
    nobody = client.post("/infer", json=BODY, headers={"X-Capability-Type": "nobody"})
    assert nobody.status_code == 404


def test_a_replica_that_turns_up_while_a_request_waits_serves_it(make_client, register, upstream):
    client = make_client(capacity_wait_seconds=5)
    register(client, "r", A, {"type": "chat", "state": "failed"})
    later = threading.Timer(0.2, register, (client, "r", A, {"type": "chat", "state": "cold"}))
    later.start()
    response = client.post("/infer", json=BODY, headers={"X-Capability-Type": "chat"})
    later.join()
    assert response.status_code == 200 and response.headers["X-Served-By"] == "r", response.text


def test_what_a_silent_replica_offered_is_remembered(make_client, register, upstream):
    client = make_client(capacity_wait_seconds=0.1, ttl_seconds=0.2)
    register(client, "r", A, {"type": "echo"})
    registry = client.app_state.registry
    deadline = time.monotonic() + 5
    while len(registry):  # the sweep expires it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    gone = client.post("/infer", json=BODY, headers=ECHO)
    assert gone.status_code == 503 and "went silent" in gone.json()["error"], gone.text
    registry.offer_memory_seconds = 0.0  # forgotten: now nobody offers it
    assert client.post("/infer", json=BODY, headers=ECHO).status_code == 404


def test_a_router_that_just_started_waits_for_replicas_to_register_again(make_client, register, upstream):
    client = make_client(heartbeat_seconds=1.0, capacity_wait_seconds=5)  # 2 s of grace from the start
    later = threading.Timer(0.3, register, (client, "r", A, {"type": "echo"}))
    later.start()
    response = client.post("/infer", json=BODY, headers=ECHO)
    later.join()
    assert response.status_code == 200, response.text
    began = time.monotonic()
    nobody = client.post("/infer", json=BODY, headers={"X-Capability-Type": "nobody"})
    assert nobody.status_code == 404  # once the grace is over: nobody offers it
    assert time.monotonic() - began < 2.0 + SLACK


def test_a_deadline_shorter_than_the_capacity_wait_wins(make_client, register, upstream):
    client = make_client(capacity_wait_seconds=5)
    register(client, "r", A, {"type": "chat", "state": "failed"})
    began = time.monotonic()
    response = client.post("/infer", json=BODY, headers={"X-Capability-Type": "chat", "X-Request-Timeout": "0.3"})
    assert response.status_code in (503, 504), response.text
    assert time.monotonic() - began < 0.3 + SLACK


def test_deadlines_serve_a_second_event_loop_after_the_first_closed():
    """The watcher keeps the loop of its last call (no running-loop look-up per request), yet a router app reused
    on a new loop, as a test client does, still watches its calls there: past the deadline the call is cancelled."""
    from anyserve_router.deadlines import Deadlines

    deadlines = Deadlines(tick=0.02)

    async def late_call() -> str:
        call = deadlines.watch(time.monotonic() + 0.05)
        try:
            await asyncio.sleep(5)
            return "not cancelled"
        except asyncio.CancelledError:
            return "cancelled at the deadline"
        finally:
            deadlines.done(call)

    assert asyncio.run(late_call()) == "cancelled at the deadline"
    assert asyncio.run(late_call()) == "cancelled at the deadline"  # a new loop: the kept one is closed
