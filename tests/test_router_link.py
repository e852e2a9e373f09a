"""The router link end to end: replicas serve it by default and the router uses it; either side can turn it off.

A replica registers ``tcp://host:port`` next to its gRPC endpoint, and the
router sends requests there (the replica counts them in its status). With
the link off on either side, everything still works, over gRPC. A link that
cannot be served fails the replica's start-up with the reason.
"""

from __future__ import annotations

import pytest
from processes import free_port, run_anyserve
from router_http import ECHO_APP, output, register, tensor, wait_registered

from anyserve.status_client import replica_status

ADD = {"X-Capability-Type": "add"}
BODY = {"inputs": [tensor("a", "INT64", [1, 2]), tensor("b", "INT64", [10, 20])]}


def status(endpoint: str) -> dict:
    return replica_status(endpoint)


def add_three_times(http) -> None:
    for _ in range(3):
        response = http.post("/infer", json=BODY, headers=ADD)
        assert response.status_code == 200, response.text
        assert output(response.json(), "sum") == [11, 22]


def test_a_replica_registers_its_link_and_the_router_sends_requests_over_it(start_router, start_replica, http_to):
    router = start_router()
    http = http_to(router.url)
    replica = start_replica("echo_app:app", "--api-server", router.url, "--replica-id", "r1")
    assert replica.link is not None and replica.link.startswith("tcp://127.0.0.1:")
    [entry] = wait_registered(router.url, 1)
    assert entry["link"] == replica.link and entry["endpoint"] == replica.endpoint
    add_three_times(http)
    assert status(replica.endpoint)["link_requests"] == 3
    # a stream goes over the link too
    with http.stream("POST", "/infer/stream", json={"inputs": []}, headers={"X-Capability-Type": "chat"}) as r:
        assert r.status_code == 200 and "[DONE]" in r.read().decode()
    assert status(replica.endpoint)["link_requests"] == 4


@pytest.mark.parametrize("side", ["router", "replica"])
def test_with_the_link_off_on_either_side_requests_go_over_grpc(start_router, start_replica, http_to, side):
    router = start_router(**({"ANYSERVE_LINK": "off"} if side == "router" else {}))
    http = http_to(router.url)
    args = ["--link", "off"] if side == "replica" else []
    replica = start_replica("echo_app:app", "--api-server", router.url, *args)
    [entry] = wait_registered(router.url, 1)
    assert (entry["link"] is None) == (side == "replica")
    add_three_times(http)
    assert status(replica.endpoint)["link_requests"] == 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--link", "unix"], "'unix' is not a network transport"),
        (["--link", "nosuch"], "named 'nosuch' is installed; installed: "),
    ],
)
def test_a_link_that_cannot_be_served_fails_start_up_with_the_reason(args, reason):
    process = run_anyserve("start", "--app", "echo_app:app", "--port", str(free_port()), *args)
    try:
        assert process.proc.wait(timeout=60) != 0
        assert reason in process.output(settle=0)
    finally:
        process.kill_group()


def test_a_taken_link_port_fails_start_up_naming_it(start_replica):
    taken = start_replica("echo_app:app")
    port = taken.link.rsplit(":", 1)[1]
    process = run_anyserve("start", "--app", "echo_app:app", "--port", str(free_port()), "--link-port", port)
    try:
        assert process.proc.wait(timeout=60) != 0
        text = process.output(settle=0)
        assert f"127.0.0.1:{port}" in text and "--link-port" in text
    finally:
        process.kill_group()


def test_a_link_the_router_cannot_speak_falls_back_to_grpc(start_router, start_replica, http_to):
    router = start_router()
    http = http_to(router.url)
    replica = start_replica("echo_app:app")
    register(http, "r1", replica.endpoint, ECHO_APP, link="quic://127.0.0.1:1")
    add_three_times(http)
    assert status(replica.endpoint)["link_requests"] == 0
    assert "quic:// links" in router.process.output()
