"""Router and replicas together: registration, delegation, discovery, context.call.

Replicas register themselves (`anyserve start --api-server URL`), exactly as
a deployment would run them.
"""

from __future__ import annotations

import httpx
import pytest
from processes import Replica, Router
from router_http import wait_registered

from anyserve import Client, InferenceError


@pytest.fixture
def cluster(start_router, start_replica) -> tuple[Router, dict[str, Replica]]:
    router = start_router()
    replicas = {
        name: start_replica(f"cluster_apps:{name}", "--api-server", router.url, "--replica-id", f"replica-{name}")
        for name in ("chat", "embed", "heavy")
    }
    wait_registered(router.url, 3)
    return router, replicas


def test_replicas_register_with_their_capabilities(cluster):
    router, replicas = cluster
    registry = {r["replica_id"]: r for r in httpx.get(f"{router.url}/registry").json()["replicas"]}
    assert set(registry) == {"replica-chat", "replica-embed", "replica-heavy"}
    assert registry["replica-heavy"]["endpoint"] == replicas["heavy"].endpoint
    assert {"type": "heavy", "gpus": 2} in registry["replica-heavy"]["capabilities"]


def test_routing_by_capability_through_the_router(cluster):
    router, _ = cluster
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    answer = httpx.post(f"{router.url}/infer", json=body, headers={"X-Capability-Type": "embed"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == ["embedded: hi"]
    assert answer.headers["X-Served-By"] == "replica-embed"
    typed = httpx.post(
        f"{router.url}/infer", json=body, headers={"X-Capability-Type": "heavy", "X-Capability-Gpus": "2"}
    )
    assert typed.status_code == 200 and typed.headers["X-Served-By"] == "replica-heavy"


def test_a_replica_delegates_what_it_cannot_serve(cluster):
    _, replicas = cluster
    with Client(replicas["chat"].endpoint) as client:
        result = client.infer("heavy", {"x": 1}, capability={"type": "heavy"})
    assert result["text_output"] == ["heavy done"]
    assert result.parameters["anyserve.delegated_from"] == "replica-chat"


def test_delegation_is_one_hop_never_a_loop(cluster):
    _, replicas = cluster
    with Client(replicas["chat"].endpoint) as client, pytest.raises(InferenceError) as info:
        client.infer("translate", {"x": 1}, capability={"type": "translate"}, timeout=20)
    assert info.value.code == "NOT_FOUND"
    assert "translate" in info.value.message


def test_context_call_reaches_another_replica_through_the_router(cluster):
    _, replicas = cluster
    with Client(replicas["chat"].endpoint) as client:
        result = client.infer("pipeline", {"x": 1})
    assert result["text_output"] == ["embedded: from the pipeline"]


def test_discovery_client_finds_and_refinds_a_replica(start_router, start_replica):
    router = start_router()
    first = start_replica("cluster_apps:embed", "--api-server", router.url, "--replica-id", "embed-1")
    wait_registered(router.url, 1)
    client = Client(api_server=router.url, capability={"type": "embed"})
    assert client.endpoint == first.endpoint
    assert client.infer("embed", {"text": "a"})["text_output"] == ["embedded: a"]
    second = start_replica("cluster_apps:embed", "--api-server", router.url, "--replica-id", "embed-2")
    wait_registered(router.url, 2)
    first.process.signal(15)  # a clean stop deregisters
    first.process.proc.wait(timeout=20)
    assert client.infer("embed", {"text": "b"})["text_output"] == ["embedded: b"]
    assert client.endpoint == second.endpoint
    client.close()


def test_replica_registers_again_after_the_router_restarts(start_router, start_replica):
    router = start_router("--ttl-seconds", "3")
    start_replica("cluster_apps:embed", "--api-server", router.url, "--replica-id", "survivor")
    wait_registered(router.url, 1)
    port = int(router.url.rsplit(":", 1)[1])
    router.process.kill_group()
    again = start_router("--ttl-seconds", "3", port=port)
    assert [r["replica_id"] for r in wait_registered(again.url, 1, timeout=30)] == ["survivor"]
