"""Delegation through the router end to end: the origin is excluded, and one hop is the limit.

A replica that cannot serve a request hands it back to the router with
``X-Delegated-From`` / ``X-Delegation-Depth``; here the tests send that
forwarded call themselves, exactly as a replica would, and check where it
goes, how it is marked, and that the receiving replica never delegates again.
"""

from __future__ import annotations

import httpx
import pytest
from router_http import ECHO_APP, member_headers, register

from anyserve.protocol import messages as pb

ECHO = {"X-Capability-Type": "echo"}


def delegated(origin: str, depth: int = 1) -> dict[str, str]:
    return {"X-Delegated-From": origin, "X-Delegation-Depth": str(depth)}


@pytest.fixture
def pair(start_router, start_replica):
    """A router and two echo_app replicas, ``a`` and ``b``."""
    router = start_router()
    http = httpx.Client(base_url=router.url, timeout=30, headers=member_headers())
    for rid in ("a", "b"):
        register(http, rid, start_replica("echo_app:app", transport="inproc").endpoint, ECHO_APP)
    yield router, http
    http.close()


def test_a_delegated_request_never_goes_back_to_its_origin(pair):
    _, http = pair
    for _ in range(10):
        response = http.post("/infer", json={"id": "d1", "inputs": []}, headers={**ECHO, **delegated("a")})
        assert response.status_code == 200, response.text
        assert response.headers["X-Served-By"] == "b"
        assert response.headers["X-Delegated-From"] == "a"
        assert response.json()["parameters"]["anyserve.delegated_from"] == "a"
    # a replica forwards protobuf; the answer is marked the same way
    payload = pb.ModelInferRequest(id="d2").SerializeToString()
    response = http.post(
        "/infer", content=payload, headers={**ECHO, **delegated("b"), "Content-Type": "application/x-protobuf"}
    )
    assert response.headers["X-Served-By"] == "a"
    answer = pb.ModelInferResponse.FromString(response.content)
    assert answer.id == "d2" and answer.parameters["anyserve.delegated_from"].string_param == "b"


def test_nothing_else_matches_is_404_never_a_loop(pair):
    _, http = pair
    http.delete("/register/b")
    response = http.post("/infer", json={"inputs": []}, headers={**ECHO, **delegated("a")})
    assert response.status_code == 404
    assert "other than 'a'" in response.json()["error"] and '{"type":"echo"}' in response.json()["error"]
    second_hop = http.post("/infer", json={"inputs": []}, headers={**ECHO, **delegated("b", depth=2)})
    assert second_hop.status_code == 404 and "delegated at most 1 time" in second_hop.json()["error"]


def test_the_receiving_replica_does_not_delegate_again(start_router, start_replica, data_path):
    """The router forwards the depth (gRPC metadata or the link's map); the replica refuses a second hop."""
    router = start_router()
    with httpx.Client(base_url=router.url, timeout=30, headers=member_headers()) as http:
        # A replica that can delegate (it knows the router) registered, by hand, for a capability
        # its app does not serve: the request reaches it and it has to decide what to do.
        replica = start_replica("echo_app:app", "--api-server", router.url, "--replica-id", "b-self")
        register(http, "b", replica.endpoint, [{"type": "phantom"}], replica.link if data_path == "link" else None)
        response = http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "phantom", **delegated("a")})
        assert response.status_code == 404
        assert response.headers["X-Served-By"] == "b"
        message = response.json()["error"]
        assert "already delegated 1 time" in message, message
