"""``POST /infer/stream``: replica stream responses -> SSE, with the replicas faked."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace

from anyserve.protocol import split_error
from anyserve_encoding_sse.encoder import SSEEncoder
from anyserve_router.streaming import READ_AHEAD, KServeEvents, StreamBridge
from anyserve_router.upstream import UpstreamError

A, B = "127.0.0.1:5001", "127.0.0.1:5002"
BODY = {"inputs": []}
CHAT = {"X-Capability-Type": "chat"}


def events(text: str) -> list[tuple[str, str]]:
    """(event name, data) per SSE event."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event", "message"), fields["data"]))
    return out


def tokens(text: str) -> list[str]:
    return [json.loads(data)["outputs"][0]["data"][0] for name, data in events(text) if name == "message"]


def test_tokens_in_order_then_end_and_the_final_marker_is_skipped(client, register, upstream, wire):
    register(client, "r", A, {"type": "chat", "stream": True})
    upstream.streams[A] = [wire.token("Hel"), wire.token("lo"), wire.final()]
    response = client.post("/infer/stream", json=BODY, headers=CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["X-Served-By"] == "r"
    assert tokens(response.text) == ["Hel", "lo"]
    assert events(response.text)[-1] == ("end", "[DONE]")
    assert len(events(response.text)) == 3
    assert client.get("/registry").json()["replicas"][0]["in_flight"] == 0


def test_errors_mid_stream_are_error_events_that_end_it(client, register, upstream, wire):
    register(client, "r", A, {"type": "chat", "stream": True})
    upstream.streams[A] = [wire.token("a"), wire.stream_error("INTERNAL: RuntimeError: boom"), wire.token("never")]
    text = client.post("/infer/stream", json=BODY, headers=CHAT).text
    assert tokens(text) == ["a"]
    assert events(text)[-1] == (
        "error",
        json.dumps({"error": "RuntimeError: boom", "code": "INTERNAL"}, separators=(",", ":")),
    )
    upstream.streams[A] = [wire.token("a"), UpstreamError("Socket closed", code="UNAVAILABLE")]
    text = client.post("/infer/stream", json=BODY, headers=CHAT).text
    assert events(text)[-1][0] == "error" and "Socket closed" in events(text)[-1][1]
    assert all(s.cancelled for s in upstream.opened)


def test_a_stream_failing_before_any_token_is_an_http_error(client, register, upstream, wire):
    register(client, "r", A, {"type": "chat", "stream": True})
    upstream.streams[A] = [wire.stream_error("NOT_FOUND: no capability matches")]
    response = client.post("/infer/stream", json=BODY, headers=CHAT)
    assert response.status_code == 404
    assert response.json() == {"error": "no capability matches", "code": "NOT_FOUND"}
    assert response.headers["X-Served-By"] == "r"


def test_streams_go_only_to_streaming_offers_and_skip_unreachable_once(client, register, upstream, wire):
    register(client, "unary", A, {"type": "chat", "stream": False})
    missing = client.post("/infer/stream", json=BODY, headers=CHAT)
    assert missing.status_code == 404
    assert "served only as a unary call" in missing.json()["error"]
    register(client, "dead", B, {"type": "chat", "stream": True})
    register(client, "live", "127.0.0.1:5003", {"type": "chat", "stream": True})
    upstream.streams[B] = ["unreachable"]
    for _ in range(5):
        response = client.post("/infer/stream", json=BODY, headers=CHAT)
        assert response.status_code == 200 and response.headers["X-Served-By"] == "live"
    client.delete("/register/live")
    response = client.post("/infer/stream", json=BODY, headers=CHAT)
    assert response.status_code == 502 and "did not answer" in response.json()["error"]
    assert "'dead'" not in response.json()["error"]  # which replica is for the router's log


def test_delegated_streams_are_marked(client, register, upstream, wire):
    register(client, "a", A, {"type": "chat", "stream": True})
    register(client, "b", B, {"type": "chat", "stream": True})
    response = client.post("/infer/stream", json=BODY, headers={**CHAT, "X-Delegated-From": "a"})
    assert response.headers["X-Served-By"] == "b" and response.headers["X-Delegated-From"] == "a"
    first = json.loads(events(response.text)[0][1])
    assert first["parameters"]["anyserve.delegated_from"] == "a"
    assert upstream.calls[-1][2]["x-delegation-depth"] == "1"


def bridge_over(stream) -> StreamBridge:
    lease = SimpleNamespace(replica_id="r", release=threading.Event().set)
    return StreamBridge(stream, stream.items.pop(0), KServeEvents(SSEEncoder()), lease)  # type: ignore[arg-type]


def test_responses_that_arrived_together_leave_in_one_write(wire):
    count = READ_AHEAD // 2
    stream = wire.stream([wire.token(f"t{i}") for i in range(count)] + [wire.final()])

    async def writes() -> list[bytes]:
        return [chunk async for chunk in bridge_over(stream).body()]

    chunks = asyncio.run(writes())
    # the first token at once, without waiting for the rest; everything that was waiting after it in one piece
    assert len(chunks) == 2
    text = b"".join(chunks).decode()
    assert tokens(text) == [f"t{i}" for i in range(count)]
    assert events(text)[-1] == ("end", "[DONE]")
    assert stream.cancelled


def test_the_bridge_reads_at_most_read_ahead_events_past_a_stalled_writer(wire):
    stream = wire.stream([wire.token(f"t{i}") for i in range(READ_AHEAD * 4)] + [wire.final()])

    async def stall() -> int:
        body = bridge_over(stream).body()
        await anext(body)
        await asyncio.sleep(0.2)  # the HTTP side writes nothing more: the reader must stop, not read it all
        left = len(stream.items)
        await body.aclose()
        return left

    left = asyncio.run(stall())
    assert READ_AHEAD * 4 - READ_AHEAD - 1 <= left <= READ_AHEAD * 3
    assert stream.cancelled


def test_split_error():
    assert split_error("NOT_FOUND: no such thing: really") == ("NOT_FOUND", "no such thing: really")
    assert split_error("plain failure") == ("INTERNAL", "plain failure")
    assert split_error("Error: mixed case") == ("INTERNAL", "Error: mixed case")
