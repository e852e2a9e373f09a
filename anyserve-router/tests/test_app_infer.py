"""Inference over HTTP with the replicas faked at the upstream interface.

What reaches a "replica" (endpoint, bytes, gRPC metadata) is recorded, so
routing, forwarding, delegation marks and error mapping are checked exactly.
"""

from __future__ import annotations

import json
import logging

from anyserve.protocol import messages as pb
from anyserve_router.upstream import UpstreamError

A, B, C = "127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"
BODY = {"id": "q1", "inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def cap(**headers: str) -> dict[str, str]:
    return {f"X-Capability-{k.replace('_', '-').title()}": v for k, v in headers.items()}


def test_capability_headers_pick_the_replica_and_travel_as_metadata(client, register, upstream):
    register(client, "chat", A, {"type": "chat", "model": "big", "gpus": 2})
    register(client, "embed", B, {"type": "embed", "model_family": "mini"})
    response = client.post("/infer", json=BODY, headers=cap(type="chat", gpus="2"))
    assert response.status_code == 200, response.text
    assert response.headers["X-Served-By"] == "chat"
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["id"] == "q1" and data["model_name"] == "chat"
    assert data["outputs"] == [{"name": "x", "datatype": "INT64", "shape": [2], "parameters": {}, "data": [1, 2]}]
    endpoint, _, metadata = upstream.calls[-1]
    assert endpoint == A
    assert metadata == {"x-capability-type": "chat", "x-capability-gpus": "2"}
    embed = client.post(
        "/infer", json=BODY, headers={"X-Capability-Type": "embed", "X-Capability-Model-Family": "mini"}
    )
    assert embed.headers["X-Served-By"] == "embed"
    assert upstream.calls[-1][2] == {"x-capability-type": "embed", "x-capability-model-family": "mini"}


def test_kserve_path_uses_model_name_and_version(client, register, upstream):
    register(client, "chat", A, {"type": "chat", "model": "big"})
    register(client, "other", B, {"type": "chat", "model": "small"})
    response = client.post("/v2/models/chat/versions/small/infer", json=BODY)
    assert response.headers["X-Served-By"] == "other"
    assert upstream.calls[-1][2] == {"x-capability-type": "chat", "x-capability-model": "small"}
    sent = pb.ModelInferRequest.FromString(upstream.calls[-1][1])
    assert (sent.model_name, sent.model_version) == ("chat", "small")
    assert client.post("/v2/models/chat/infer", json=BODY).status_code == 200
    # headers, when present, win over the path
    assert client.post("/v2/models/x/infer", json=BODY, headers=cap(model="big")).headers["X-Served-By"] == "chat"


def test_protobuf_bodies_pass_through_untouched(client, register, upstream, wire):
    register(client, "echo", A, {"type": "echo"})
    request = pb.ModelInferRequest(id="p1", model_name="echo")
    request.inputs.add(name="b", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff")
    payload = request.SerializeToString()
    response = client.post("/infer", content=payload, headers={**PROTOBUF, **cap(type="echo")})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert upstream.calls[-1][1] == payload
    assert response.content == wire.echo(payload, {"x-capability-type": "echo"})
    # without headers the model name inside the message is the capability
    plain = client.post("/infer", content=payload, headers=PROTOBUF)
    assert plain.status_code == 200 and upstream.calls[-1][2] == {"x-capability-type": "echo"}
    garbage = client.post("/infer", content=b"\xff\xff\xff", headers=PROTOBUF)
    assert garbage.status_code == 400 and "ModelInferRequest" in garbage.json()["error"]


def test_no_capability_and_no_match(client, register):
    register(client, "chat", A, {"type": "chat", "model": "big"})
    none = client.post("/infer", json=BODY)
    assert none.status_code == 400 and "X-Capability-" in none.json()["error"]
    missing = client.post("/infer", json=BODY, headers=cap(type="tts"))
    assert missing.status_code == 404
    message = missing.json()["error"]
    assert '{"type":"tts"}' in message and '{"type":"chat","model":"big"}' in message


def test_bad_capability_headers_are_400(client):
    for headers in ({"X-Capability-": "x"}, {"X-Capability-Type": " "}, {"X-Capability-Ty*pe": "x"}):
        response = client.post("/infer", json=BODY, headers=headers)
        assert response.status_code == 400, headers


def test_no_match_any_replica_sends_it_somewhere(make_client, register, upstream):
    client = make_client(no_match="any-replica")
    register(client, "chat", A, {"type": "chat"})
    response = client.post("/infer", json=BODY, headers=cap(type="tts"))
    assert response.status_code == 200 and response.headers["X-Served-By"] == "chat"
    # never for a delegated request: that could loop
    delegated = client.post("/infer", json=BODY, headers={**cap(type="tts"), "X-Delegated-From": "elsewhere"})
    assert delegated.status_code == 404


def test_replica_errors_keep_code_and_message(client, register, upstream):
    register(client, "r", A, {"type": "chat"})

    def fail(code):
        def behaviour(payload, metadata):
            raise UpstreamError(f"the replica says {code}", code=code)

        return behaviour

    # A replica's own UNAVAILABLE is "not now" (503, Retry-After); 502 is for one that could not be reached.
    for code, status in [("NOT_FOUND", 404), ("INVALID_ARGUMENT", 400), ("INTERNAL", 500), ("UNAVAILABLE", 503)]:
        upstream.unary[A] = fail(code)
        response = client.post("/infer", json=BODY, headers=cap(type="chat"))
        assert response.status_code == status
        assert response.headers["Retry-After"] == ("1" if code == "UNAVAILABLE" else None)
        assert response.json() == {"error": f"the replica says {code}", "code": code}
        assert response.headers["X-Served-By"] == "r"
    assert len(upstream.calls) == 4  # an answered error is never retried elsewhere


def test_unreachable_replica_is_skipped_once_then_502(client, register, upstream, wire, caplog):
    for rid, endpoint in (("a", A), ("b", B), ("c", C)):
        register(client, rid, endpoint, {"type": "echo"})
    upstream.unary[A] = upstream.unary[B] = wire.unreachable
    for _ in range(10):
        upstream.calls.clear()
        response = client.post("/infer", json=BODY, headers=cap(type="echo"))
        endpoints = [c[0] for c in upstream.calls]
        if response.status_code == 200:
            assert response.headers["X-Served-By"] == "c" and endpoints[-1] == C and len(endpoints) <= 2
        else:
            assert response.status_code == 502 and sorted(endpoints) == [A, B]
            assert "the 2 replicas tried" in response.json()["error"]
    upstream.unary[C] = wire.unreachable
    response = client.post("/infer", json=BODY, headers=cap(type="echo"))
    assert response.status_code == 502 and "did not answer" in response.json()["error"]
    client.delete("/register/b")
    client.delete("/register/c")
    with caplog.at_level(logging.WARNING, logger="anyserve.router"):
        alone = client.post("/infer", json=BODY, headers=cap(type="echo"))
    assert alone.status_code == 502
    message = alone.json()["error"]
    assert "did not answer" in message and "no other live replica" in message
    # Which replica and where is for the operator's log, not for the client.
    assert "'a'" not in message and "5001" not in message
    request_id = alone.headers["X-Request-Id"]
    assert request_id in message
    assert f"replica a at 127.0.0.1:5001 did not answer request {request_id}" in caplog.text
    assert client.get("/registry").json()["replicas"][0]["in_flight"] == 0  # leases released


def test_delegated_requests_exclude_the_origin_and_are_marked(client, register, upstream):
    register(client, "a", A, {"type": "echo"})
    register(client, "b", B, {"type": "echo"})
    headers = {**cap(type="echo"), "X-Delegated-From": "a", "X-Delegation-Depth": "1"}
    for _ in range(8):
        response = client.post("/infer", json=BODY, headers=headers)
        assert response.headers["X-Served-By"] == "b"
        assert response.headers["X-Delegated-From"] == "a"
        assert response.json()["parameters"]["anyserve.delegated_from"] == "a"
        metadata = upstream.calls[-1][2]
        assert metadata["x-delegated-from"] == "a" and metadata["x-delegation-depth"] == "1"
    # protobuf: re-serialised only to add the mark
    payload = pb.ModelInferRequest(id="p").SerializeToString()
    response = client.post("/infer", content=payload, headers={**headers, **PROTOBUF})
    marked = pb.ModelInferResponse.FromString(response.content)
    assert marked.parameters["anyserve.delegated_from"].string_param == "a" and marked.id == "p"
    # nothing else matches: 404, never back to the origin
    client.delete("/register/b")
    refused = client.post("/infer", json=BODY, headers=headers)
    assert refused.status_code == 404 and "other than 'a'" in refused.json()["error"]


def test_second_hop_and_bad_delegation_headers(client, register):
    register(client, "b", B, {"type": "echo"})
    second = client.post(
        "/infer", json=BODY, headers={**cap(type="echo"), "X-Delegated-From": "a", "X-Delegation-Depth": "2"}
    )
    assert second.status_code == 404 and "delegated at most 1 time" in second.json()["error"]
    for headers in ({"X-Delegation-Depth": "1"}, {"X-Delegated-From": "a", "X-Delegation-Depth": "one"}):
        assert client.post("/infer", json=BODY, headers={**cap(type="echo"), **headers}).status_code == 400


def test_body_limit_by_content_length_and_while_reading(make_client, register):
    client = make_client(max_body_bytes=2048)
    register(client, "r", A, {"type": "echo"})
    big = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["y" * 4096]}]})
    response = client.post("/infer", content=big, headers=cap(type="echo"))
    assert response.status_code == 413
    assert "2048 bytes" in response.json()["error"] and "router.max_body_bytes" in response.json()["error"]

    def chunks():
        for _ in range(8):
            yield b"x" * 1024

    streamed = client.post("/infer", content=chunks(), headers=cap(type="echo"))
    assert streamed.status_code == 413 and "router.max_body_bytes" in streamed.json()["error"]
    assert client.post("/infer", json=BODY, headers=cap(type="echo")).status_code == 200


def test_model_metadata_comes_from_a_serving_replica_within_a_deadline(client, register, upstream):
    register(client, "a", A, {"type": "echo"})
    body = client.get("/v2/models/echo").json()
    assert body == {
        "name": "echo",
        "versions": [],
        "platform": "fake",
        "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1]}],
        "outputs": [],
    }
    assert upstream.calls[-1][2] == {"x-capability-type": "echo"}
    upstream.stalled.add(A)  # a replica that never answers costs the request's deadline, not for ever
    stalled = client.get("/v2/models/echo", headers={"X-Request-Timeout": "0.2"})
    assert stalled.status_code == 504 and "gave no model metadata within 0.2s" in stalled.json()["error"]
    assert client.get("/registry").json()["replicas"][0]["in_flight"] == 0  # lease released
    assert client.get("/v2/models/nope").status_code == 404


def test_every_answer_carries_the_request_id_the_replica_got(client, register, upstream):
    register(client, "a", A, {"type": "echo"})
    register(client, "s", B, {"type": "chat", "stream": True})
    mine = client.post("/infer", json=BODY, headers={**cap(type="echo"), "X-Request-Id": "client-7"})
    assert mine.headers["X-Request-Id"] == "client-7" and upstream.request_ids[-1] == "client-7"
    made = client.post("/infer", json=BODY, headers=cap(type="echo"))
    assert made.headers["X-Request-Id"] == upstream.request_ids[-1] != "client-7"
    streamed = client.post("/infer/stream", json=BODY, headers=cap(type="chat"))
    assert streamed.headers["X-Request-Id"] == upstream.request_ids[-1]
    long = client.post("/infer", json=BODY, headers={**cap(type="echo"), "X-Request-Id": "x" * 300})
    assert long.status_code == 400 and "longer than 256" in long.json()["error"]
