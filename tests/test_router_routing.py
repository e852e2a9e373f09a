"""The router end to end: `anyserve router` in front of real replicas, over real HTTP and gRPC.

Routing by capability across replicas serving different apps, the KServe v2
REST paths, protobuf bodies, load spreading, discovery and membership errors.
"""

from __future__ import annotations

import concurrent.futures
from collections import Counter

import pytest
from router_http import CHAT_APP, ECHO_APP, EMBED_APP, output, register, tensor

from anyserve.protocol import messages as pb


@pytest.fixture
def three(start_router, start_replica, http_to):
    """A router with three replicas serving three different apps."""
    router = start_router()
    http = http_to(router.url)
    replicas = {
        "echo": start_replica("echo_app:app", transport="inproc"),
        "chat": start_replica("router_apps:chat_app", transport="inproc"),
        "embed": start_replica("router_apps:embed_app", transport="inproc"),
    }
    for (rid, replica), caps in zip(replicas.items(), (ECHO_APP, CHAT_APP, EMBED_APP), strict=True):
        register(http, rid, replica.endpoint, caps)
    return http


def test_capability_headers_route_to_the_replica_that_serves_them(three):
    http = three
    add = http.post(
        "/infer",
        json={"inputs": [tensor("a", "INT64", [1, 2]), tensor("b", "INT64", [10, 20])]},
        headers={"X-Capability-Type": "add"},
    )
    assert add.status_code == 200, add.text
    assert add.headers["X-Served-By"] == "echo"
    assert output(add.json(), "sum") == [11, 22]

    chat = http.post(
        "/infer",
        json={"id": "c1", "inputs": [tensor("prompt", "BYTES", ["héllo"])]},
        headers={"X-Capability-Type": "chat", "X-Capability-Gpus": "2"},
    )
    assert chat.headers["X-Served-By"] == "chat"
    body = chat.json()
    assert body["parameters"]["app"] == "chat" and body["id"] == "c1"
    assert output(body, "prompt") == ["héllo"]

    # a multi-word key: the header's dashes are the offer's underscores
    embed = http.post(
        "/infer",
        json={"inputs": [tensor("x", "FP32", [[0.5, 1.5]], shape=[1, 2])]},
        headers={"X-Capability-Type": "embed", "X-Capability-Model-Family": "mini"},
    )
    assert embed.headers["X-Served-By"] == "embed"
    out = embed.json()["outputs"][0]
    assert out["data"] == [0.5, 1.5] and out["shape"] == [1, 2]

    # every header key takes part: region=eu is the echo app's chat, not the chat app's
    eu = http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "chat", "X-Capability-Region": "eu"})
    assert eu.headers["X-Served-By"] == "echo"


def test_kserve_rest_paths_use_model_name_and_version(three):
    http = three
    add = http.post("/v2/models/add/infer", json={"inputs": [tensor("a", "INT64", [1]), tensor("b", "INT64", [2])]})
    assert add.status_code == 200 and output(add.json(), "sum") == [3]
    big = http.post("/v2/models/chat/versions/big/infer", json={"inputs": []})
    assert big.headers["X-Served-By"] == "chat"
    assert (big.json()["model_name"], big.json()["model_version"]) == ("chat", "big")
    assert http.get("/v2/health/ready").json()["ready"] is True
    assert http.get("/v2/models/embed/ready").status_code == 200


def test_protobuf_bodies_in_and_out(three):
    http = three
    request = pb.ModelInferRequest(id="pb1")
    blob = bytes(range(256))
    request.inputs.add(name="data", datatype="BYTES", shape=[1]).contents.bytes_contents.append(blob)
    response = http.post(
        "/infer",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "X-Capability-Type": "echo"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = pb.ModelInferResponse.FromString(response.content)
    assert answer.id == "pb1"
    assert next(t for t in answer.outputs if t.name == "output_data").contents.bytes_contents == [blob]
    # the same through JSON: base64 in; not UTF-8, so base64 out, and marked
    blob_in = tensor("data", "BYTES", ["/wA="], parameters={"content_encoding": "base64"})
    via_json = http.post("/infer", json={"inputs": [blob_in]}, headers={"X-Capability-Type": "echo"})
    out = next(o for o in via_json.json()["outputs"] if o["name"] == "output_data")
    assert out["data"] == ["/wA="] and out["parameters"]["content_encoding"] == "base64"


def test_load_spreads_over_replicas_offering_the_same_capability(start_router, start_replica, http_to):
    router = start_router()
    http = http_to(router.url)
    for rid in ("one", "two"):
        register(http, rid, start_replica("echo_app:app", transport="inproc").endpoint, ECHO_APP)

    def slow_call(_: int) -> str:
        response = http.post(
            "/infer", json={"inputs": [tensor("s", "FP64", [0.3])]}, headers={"X-Capability-Type": "slow"}
        )
        assert response.status_code == 200, response.text
        return response.headers["X-Served-By"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        served = Counter(pool.map(slow_call, range(8)))
    assert set(served) == {"one", "two"}, served
    # sequential requests find both idle; the routing hook picks among them at random
    served = Counter(
        http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "echo"}).headers["X-Served-By"]
        for _ in range(30)
    )
    assert set(served) == {"one", "two"}, served
    assert all(r["in_flight"] == 0 for r in http.get("/registry").json()["replicas"])


def test_lookup_and_not_found_messages(three):
    http = three
    found = http.get("/lookup", params={"type": "embed", "model_family": "mini"})
    assert found.status_code == 200 and found.json()["replica_id"] == "embed"
    assert http.get("/lookup", headers={"X-Capability-Type": "add"}).json()["replica_id"] == "echo"
    missing = http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "tts"})
    assert missing.status_code == 404
    message = missing.json()["error"]
    assert '{"type":"tts"}' in message and '"type":"embed"' in message and '"type":"add"' in message
    assert http.get("/lookup", params={"type": "tts"}).status_code == 404


def test_membership_errors(three, start_replica):
    http = three
    other = start_replica("echo_app:app", transport="inproc")
    clash = http.post("/register", json={"replica_id": "echo", "endpoint": other.endpoint, "capabilities": ECHO_APP})
    assert clash.status_code == 409 and "'echo'" in clash.json()["error"]
    assert http.post("/heartbeat", json={"replica_id": "nobody", "in_flight": 0}).status_code == 404
    assert http.delete("/register/nobody").status_code == 404
    assert http.post("/heartbeat", json={"replica_id": "echo", "in_flight": 0}).status_code == 200
    assert http.delete("/register/embed").status_code == 200
    assert {r["replica_id"] for r in http.get("/registry").json()["replicas"]} == {"echo", "chat"}
    assert http.get("/health").json() == {"status": "ok", "replicas": 2}
