"""`POST /infer/stream` end to end: a replica's stream (gRPC or link) reaches the HTTP client as SSE.

Tokens arrive in order and as they are produced, the end marker closes the
stream, errors become error events, and a client that leaves stops the
handler on the replica.
"""

from __future__ import annotations

import time

import httpx
import pytest
from router_http import CHAT_APP, ECHO_APP, member_headers, register, sse_events, token_text


@pytest.fixture
def routed(start_router, start_replica, data_path):
    """An HTTP client to a router with one echo_app and one chat_app replica registered (gRPC or link)."""
    router = start_router()
    http = httpx.Client(base_url=router.url, timeout=30, headers=member_headers())
    for replica_id, app, capabilities in (
        ("echo", "echo_app:app", ECHO_APP),
        ("chat", "router_apps:chat_app", CHAT_APP),
    ):
        replica = start_replica(app, transport="inproc")
        register(http, replica_id, replica.endpoint, capabilities, replica.link if data_path == "link" else None)
    yield http
    http.close()


def stream(http: httpx.Client, capability: str, **parameters: str):
    return http.stream(
        "POST",
        "/infer/stream",
        json={"parameters": parameters, "inputs": []},
        headers={"X-Capability-Type": capability},
    )


def test_tokens_in_order_then_the_end_marker(routed):
    with stream(routed, "chat") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["X-Served-By"] == "echo"
        events = list(sse_events(response.iter_lines()))
    assert [token_text(data) for name, data in events if name == "message"] == ["Hello", " ", "world", "!"]
    assert events[-1] == ("end", "[DONE]")
    assert len(events) == 5  # the replica's empty final response is not an event


def test_the_first_token_arrives_before_the_handler_finishes(routed, tmp_path):
    marker = tmp_path / "countdown-done"
    started = time.monotonic()
    seen: list[tuple[float, str, bool]] = []
    with stream(routed, "countdown", marker=str(marker)) as response:
        assert response.headers["X-Served-By"] == "chat"
        for name, data in sse_events(response.iter_lines()):
            text = token_text(data) if name == "message" else name
            seen.append((time.monotonic() - started, text, marker.exists()))
    assert [text for _, text, _ in seen] == ["5", "4", "3", "2", "1", "end"]
    first_at, _, finished_at_first = seen[0]
    assert not finished_at_first, "the handler had already finished when the first token arrived"
    assert first_at < seen[-1][0] - 1.0  # five tokens 0.3 s apart: the first came well before the end
    assert marker.exists()


def test_a_client_that_leaves_stops_the_handler(start_router, start_replica, transport, data_path, tmp_path):
    """Over both transports and both data paths: the cancellation crosses the router, the agent and the worker IPC."""
    router = start_router()
    routed = httpx.Client(base_url=router.url, timeout=30, headers=member_headers())
    replica = start_replica("echo_app:app", transport=transport)
    register(routed, "echo", replica.endpoint, ECHO_APP, replica.link if data_path == "link" else None)
    marker = tmp_path / "ticker-stopped"
    with stream(routed, "ticker", marker=str(marker)) as response:
        received = []
        for name, data in sse_events(response.iter_lines()):
            assert name == "message"
            received.append(token_text(data))
            if len(received) == 3:
                break
    assert received == ["0", "1", "2"]
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the ticker kept running after the client left"
    assert int(marker.read_text() or 0) < 1000  # stopped early, not after its 10,000 ticks
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        loads = {r["replica_id"]: r["router_in_flight"] for r in routed.get("/registry").json()["replicas"]}
        if loads["echo"] == 0:
            break
        time.sleep(0.05)
    assert loads == {"echo": 0}
    with stream(routed, "chat") as response:  # and the router streams on
        assert list(sse_events(response.iter_lines()))[-1] == ("end", "[DONE]")
    routed.close()


def test_stream_errors(routed):
    with stream(routed, "broken-stream") as response:
        events = list(sse_events(response.iter_lines()))
    assert token_text(events[0][1]) == "partial"
    name, data = events[-1]
    assert name == "error" and data["code"] == "INTERNAL" and "failed on purpose" in data["error"]
    missing = routed.post("/infer/stream", json={"inputs": []}, headers={"X-Capability-Type": "nothing"})
    assert missing.status_code == 404 and '{"type":"nothing"}' in missing.json()["error"]
    # echo is offered unary only: a stream request does not match it
    unary_only = routed.post("/infer/stream", json={"inputs": []}, headers={"X-Capability-Type": "echo"})
    assert unary_only.status_code == 404
