"""What error bodies may say, request ids on every answer, and the request body budget (the app in-process)."""

from __future__ import annotations

import socket
import time

from anyserve import hookimpl
from anyserve_router.request_context import RequestIdFilter

A = "127.0.0.1:5001"
SECRET = "secret detail /run/anyserve/worker.sock pid 4242"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


class Exploding:
    """A routing hook with a bug: the router's own failure, as far as a client can tell."""

    @hookimpl
    def anyserve_select_target(self, query, candidates, scope):
        raise RuntimeError(SECRET)


def test_a_router_failure_is_a_500_naming_only_the_request_id(client, pm, register, caplog):
    register(client, "member-7", A, {"type": "chat", "model": "tiny"})
    pm.register(Exploding())
    caplog.handler.addFilter(RequestIdFilter())
    answers = {
        "infer": client.post(
            "/infer", json={"inputs": []}, headers={"X-Capability-Type": "chat", "X-Request-Id": "c-1"}
        ),
        "lookup": client.get("/lookup", params={"type": "chat"}),
        "openai": client.post("/v1/chat/completions", json={"model": "tiny", **CHAT}),
    }
    for name, response in answers.items():
        assert response.status_code == 500, (name, response.text)
        request_id = response.headers["X-Request-Id"]
        assert request_id and SECRET[:6] not in response.text and "member-7" not in response.text, response.text
        if name == "openai":
            assert response.json()["error"]["message"] == f"internal error (request {request_id})"
        else:
            assert response.json() == {"error": "internal error", "code": "INTERNAL", "request_id": request_id}
        logged = [r for r in caplog.records if r.exc_info and request_id in r.getMessage()]
        assert logged and SECRET in str(logged[0].exc_info[1]), name
        assert logged[0].request == f" [request {request_id}]"  # the log filter names it too
    assert answers["infer"].headers["X-Request-Id"] == "c-1"


def test_every_answer_carries_a_request_id_the_replica_sees_too(client, register, upstream):
    register(client, "r1", A, {"type": "chat"})
    answers = [
        client.get("/health"),
        client.get("/no/such/path"),
        client.post("/register", content=b"{oops", headers={"Content-Type": "application/json"}),
        client.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "chat"}),
    ]
    ids = [response.headers["X-Request-Id"] for response in answers]
    assert all(ids) and len(set(ids)) == len(ids)
    assert upstream.request_ids[-1] == ids[-1]
    assert client.get("/health", headers={"X-Request-Id": "mine-42"}).headers["X-Request-Id"] == "mine-42"
    made_up = client.get("/health", headers={"X-Request-Id": "x" * 300}).headers["X-Request-Id"]
    assert made_up and made_up != "x" * 300


def test_a_404_names_capabilities_but_never_the_replicas(make_client, register):
    client = make_client(heartbeat_seconds=0.05)  # a fresh router waits two heartbeats before any 404
    register(client, "secret-member-7", A, {"type": "chat", "model": "tiny"})
    for response in (
        client.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "embed"}),
        client.get("/lookup", params={"type": "embed"}),
        client.post("/v1/chat/completions", json={"model": "nope", **CHAT}),
    ):
        assert response.status_code == 404, response.text
        assert "secret-member-7" not in response.text and response.headers["X-Request-Id"]
    assert "tiny" in client.get("/lookup", params={"type": "embed"}).json()["error"]  # what is offered is told


def _hold_body(port: int, declared: int, sent: bytes = b"{") -> socket.socket:
    """A request whose headers declare ``declared`` body bytes, of which only ``sent`` arrive."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST /infer HTTP/1.1\r\nHost: x\r\nX-Capability-Type: chat\r\nContent-Length: {declared}\r\n\r\n"
    sock.sendall(head.encode() + sent)
    return sock


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_bodies_in_flight_past_the_budget_are_503_and_what_was_held_is_given_back(make_client):
    client = make_client(max_body_bytes_in_flight=64 * 1024)
    budget = client.server.config.app.context.budget
    holder = _hold_body(client.port, 50_000)
    _wait_for(lambda: budget.held == 50_000)
    busy = client.post("/infer", content=b"x" * 20_000, headers={"X-Capability-Type": "chat"})
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1", busy.text
    assert "router.max_body_bytes_in_flight" in busy.json()["error"]
    chunked = client.post("/infer", content=iter([b"x" * 8192] * 3), headers={"X-Capability-Type": "chat"})
    assert chunked.status_code == 503
    openai = client.post("/v1/chat/completions", content=b"x" * 20_000, headers={"Content-Type": "application/json"})
    assert openai.status_code == 503 and openai.headers["Retry-After"] == "1"
    alone = client.post("/infer", content=b"x" * 70_000, headers={"X-Capability-Type": "chat"})
    assert alone.status_code == 413 and "router.max_body_bytes_in_flight" in alone.json()["error"]
    holder.close()
    _wait_for(lambda: budget.held == 0)
    assert client.post("/infer", content=b"x" * 20_000, headers={"X-Capability-Type": "chat"}).status_code == 400
    assert budget.held == 0 and budget.peak <= 64 * 1024
