"""The router's ``GET /metrics``, end to end: who may read it, and what requests through each front leave in it.

A real router with two replicas that joined it by themselves: the echo app
(KServe) and the LLM test app (OpenAI, streaming with usage).
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from kserve import Wire, request
from metrics_text import families, label_values, value
from processes import free_port
from router_http import admin_headers, member_headers

from anyserve.metric_names import ROUTER, UNMATCHED
from anyserve.protocol import names

BODY = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}


@pytest.fixture
def grpc_port() -> int:
    return free_port()


@pytest.fixture
def cluster(start_router, start_replica, grpc_port) -> str:
    router = start_router("--grpc-port", str(grpc_port))
    start_replica("echo_app:app", "--api-server", router.url, transport="inproc")
    start_replica("llm_app:app", "--api-server", router.url, transport="inproc")
    with httpx.Client(base_url=router.url, timeout=30, headers=member_headers()) as http:
        deadline = time.monotonic() + 60
        while len(http.get("/registry").json()["replicas"]) < 2:
            assert time.monotonic() < deadline, "the replicas did not register"
            time.sleep(0.05)
    return router.url


def scrape(url: str) -> str:
    answer = httpx.get(f"{url}/metrics", headers=admin_headers(), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def test_metrics_need_the_admin_token(cluster):
    assert httpx.get(f"{cluster}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{cluster}/metrics", headers={"Authorization": "Bearer made-up"}, timeout=30).status_code == 401
    cluster_only = httpx.get(f"{cluster}/metrics", headers=member_headers(), timeout=30)
    assert cluster_only.status_code == 403 and cluster_only.json()["code"] == "PERMISSION_DENIED"
    text = scrape(cluster)
    declared = families(text)
    for spec in ROUTER:
        assert spec.name in declared, spec.name
    assert value(text, "anyserve_router_replicas") == 2
    assert value(text, "anyserve_router_capabilities") > 2


def test_requests_are_counted_by_front_routed_capability_and_status(cluster):
    with httpx.Client(base_url=cluster, timeout=30) as http:
        for _ in range(3):
            assert http.post("/infer", json=BODY, headers={"X-Capability-Type": "add"}).status_code != 404
            assert http.post("/infer", json=BODY, headers={"X-Capability-Type": "echo"}).status_code == 200
        assert http.post("/infer", json=BODY, headers={"X-Capability-Type": "no-such"}).status_code == 404
    text = scrape(cluster)
    echo = label_values(text, "anyserve_router_requests_total", "capability") & {"type=echo", "type=echo,variant=async"}
    assert len(echo) == 1, "every echo request counted under the one offer that served it"
    (served,) = echo
    assert value(text, "anyserve_router_requests_total", front="kserve", capability=served, code="200") == 3
    assert value(text, "anyserve_router_request_duration_seconds_count", front="kserve", capability=served) == 3
    assert value(text, "anyserve_router_requests_total", front="kserve", capability=UNMATCHED, code="404") == 1
    assert value(text, "anyserve_router_routing_decision_seconds_count") >= 6
    assert value(text, "anyserve_router_requests_in_flight", front="kserve") == 0
    assert value(text, "anyserve_router_replica_in_flight") == 0


def test_a_thousand_unknown_capabilities_add_no_label_values(cluster):
    with httpx.Client(base_url=cluster, timeout=30) as http:
        for i in range(1000):
            headers = {"X-Capability-Type": f"made-up-{i}", "X-Capability-Model": f"m{i}"}
            assert http.post("/infer", json=BODY, headers=headers).status_code == 404
    text = scrape(cluster)
    assert value(text, "anyserve_router_requests_total", capability=UNMATCHED, code="404") == 1000
    assert not any("made-up" in v for v in label_values(text, "anyserve_router_requests_total", "capability"))
    assert len(label_values(text, "anyserve_router_requests_total", "capability")) == 1
    assert len(text) < 100_000


def test_an_openai_stream_is_timed_per_token_and_its_usage_counted(cluster):
    with openai.OpenAI(base_url=f"{cluster}/v1", api_key="sk-anything", max_retries=0, timeout=30) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="tiny-chat",
                messages=[{"role": "user", "content": "hello there"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        sdk.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "again"}])
    assert usage is not None and usage.completion_tokens > 0
    text = scrape(cluster)
    (chat,) = [c for c in label_values(text, "anyserve_router_requests_total", "capability") if "tiny-chat" in c]
    assert value(text, "anyserve_router_requests_total", front="openai", capability=chat, code="200") == 2
    assert value(text, "anyserve_router_time_to_first_token_seconds_count", front="openai", capability=chat) == 1
    assert value(text, "anyserve_router_inter_token_latency_seconds_count", front="openai", capability=chat) >= 1
    assert value(text, "anyserve_router_generation_tokens_total", capability=chat) > usage.completion_tokens
    assert value(text, "anyserve_router_prompt_tokens_total", capability=chat) >= usage.prompt_tokens


def test_delegated_requests_are_counted(cluster):
    headers = {"X-Capability-Type": "echo", names.DELEGATED_FROM_HEADER: "someone", names.DELEGATION_DEPTH_HEADER: "1"}
    httpx.post(f"{cluster}/infer", json=BODY, headers=headers, timeout=30)
    assert value(scrape(cluster), "anyserve_router_delegations_total") == 1


def test_the_grpc_front_counts_calls_and_times_stream_runs(cluster, grpc_port):
    wire = Wire(f"127.0.0.1:{grpc_port}")
    try:
        for _ in range(2):
            wire.infer(request(x=[1]), {"type": "echo"})
        tokens = list(wire.stream([request(text_input=[b"hello there"])], {"type": "chat", "model": "tiny-chat"}))
    finally:
        wire.close()
    assert len(tokens) >= 3 and not any(t.error_message for t in tokens)
    text = scrape(cluster)
    assert value(text, "anyserve_router_requests_total", front="grpc", code="OK") == 3
    (streamed,) = label_values(text, "anyserve_router_time_to_first_token_seconds_count", "capability")
    assert value(text, "anyserve_router_time_to_first_token_seconds_count", front="grpc", capability=streamed) == 1
    assert value(text, "anyserve_router_inter_token_latency_seconds_count", front="grpc", capability=streamed) >= 2


def test_metrics_off_count_nothing_and_say_so(start_router, start_replica):
    router = start_router(ANYSERVE_ROUTER_METRICS="false")
    start_replica("echo_app:app", "--api-server", router.url, transport="inproc")
    with httpx.Client(base_url=router.url, timeout=30, headers=member_headers()) as http:
        deadline = time.monotonic() + 60
        while not http.get("/registry").json()["replicas"]:
            assert time.monotonic() < deadline, "the replica did not register"
            time.sleep(0.05)
    assert httpx.post(f"{router.url}/infer", json=BODY, headers={"X-Capability-Type": "echo"}, timeout=30).is_success
    answer = httpx.get(f"{router.url}/metrics", headers=admin_headers(), timeout=30)
    assert answer.status_code == 404 and "router.metrics = false" in answer.text
    assert httpx.get(f"{router.url}/metrics", timeout=30).status_code == 401  # still the admin's to ask
