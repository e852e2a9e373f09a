"""OpenTelemetry tracing across the hops: one trace per request, router -> agent -> worker, delegation included.

Every process writes its spans with ``[tracing] exporter = "file"`` to a
file of its own (a replica's workers share their agent's, one line per span
under a lock), and the tests read them back: the trace ids agree and each
span's parent is the previous hop's span.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from processes import free_port
from router_http import wait_registered

from anyserve.protocol import messages as pb

BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
HEAVY = {"X-Capability-Type": "heavy", "X-Capability-Gpus": "2"}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def traced_env(path: Path) -> dict[str, str]:
    return {"ANYSERVE_TRACING": "true", "ANYSERVE_TRACING_EXPORTER": "file", "ANYSERVE_TRACING_FILE": str(path)}


def spans(path: Path, want: int, *, trace_id: str | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The spans in ``path`` (of ``trace_id``), once there are ``want`` of them: a span is written as it ends."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        if path.exists():
            found = [json.loads(line) for line in path.read_text().splitlines()]
            found = [s for s in found if trace_id is None or s["trace_id"] == trace_id]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def named(found: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    matching = [s for s in found if s["name"].startswith(prefix)]
    assert len(matching) == 1, (prefix, [s["name"] for s in found])
    return matching[0]


@pytest.fixture
def cluster(start_router, start_replica, tmp_path, data_path):
    """A traced router and two self-registering replicas, ``chat`` and ``heavy``, each with its span file.

    The router reaches them over their link, or over gRPC when they serve none (``data_path``).
    """
    files = {name: tmp_path / f"{name}.jsonl" for name in ("router", "chat", "heavy")}
    router = start_router(**traced_env(files["router"]))
    link = {} if data_path == "link" else {"ANYSERVE_LINK": "off"}
    replicas = {
        name: start_replica(
            f"cluster_apps:{name}",
            "--api-server",
            router.url,
            "--replica-id",
            f"replica-{name}",
            **traced_env(files[name]),
            **link,
        )
        for name in ("chat", "heavy")
    }
    assert all((replica.link is not None) == (data_path == "link") for replica in replicas.values())
    wait_registered(router.url, 2)
    return router, replicas, files


def test_one_request_is_one_trace_router_agent_worker(cluster):
    router, _, files = cluster
    answer = httpx.post(f"{router.url}/infer", json=BODY, headers={**HEAVY, "X-Request-Id": "traced-1"}, timeout=30)
    assert answer.status_code == 200, answer.text
    front = named(spans(files["router"], 2), "router kserve /infer")
    route = named(spans(files["router"], 2), "router route")
    trace_id = front["trace_id"]
    replica = spans(files["heavy"], 2, trace_id=trace_id)
    agent, worker = named(replica, "agent infer"), named(replica, "worker heavy_work")

    assert front["parent_id"] is None and front["kind"] == "SERVER"
    assert route["trace_id"] == trace_id and route["parent_id"] == front["span_id"]
    assert agent["trace_id"] == trace_id and agent["parent_id"] == route["span_id"]
    assert worker["trace_id"] == trace_id and worker["parent_id"] == agent["span_id"]
    assert route["attributes"]["anyserve.replica_id"] == "replica-heavy"
    assert route["attributes"]["anyserve.capability"] == "gpus=2,type=heavy"
    for span in (front, route, agent, worker):
        assert span["attributes"]["anyserve.request_id"] == "traced-1", span
        assert span["status"] != "ERROR", span
    assert (front["service"], agent["service"], worker["service"]) == (
        "anyserve-router",
        "anyserve-replica",
        "anyserve-worker",
    )
    assert worker["pid"] != agent["pid"]  # a worker process of its own, writing to its agent's file


def test_a_clients_traceparent_is_continued(cluster):
    router, _, files = cluster
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    answer = httpx.post(f"{router.url}/infer", json=BODY, headers={**HEAVY, "traceparent": traceparent}, timeout=30)
    assert answer.status_code == 200, answer.text
    front = named(spans(files["router"], 2, trace_id=CLIENT_TRACE), "router kserve")
    assert front["parent_id"] == CLIENT_SPAN
    replica = spans(files["heavy"], 2, trace_id=CLIENT_TRACE)
    assert {s["name"] for s in replica} == {"agent infer", "worker heavy_work"}


def test_the_grpc_front_continues_a_trace_too(start_router, start_replica, tmp_path):
    files = {name: tmp_path / f"{name}.jsonl" for name in ("router", "heavy")}
    grpc_port = free_port()
    router = start_router("--grpc-port", str(grpc_port), **traced_env(files["router"]))
    start_replica("cluster_apps:heavy", "--api-server", router.url, **traced_env(files["heavy"]))
    wait_registered(router.url, 1)
    request = pb.ModelInferRequest(model_name="heavy", id="g1")
    metadata = (("x-capability-type", "heavy"), ("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        infer(request, metadata=metadata, timeout=30)
    front = named(spans(files["router"], 2, trace_id=CLIENT_TRACE), "router grpc ModelInfer")
    route = named(spans(files["router"], 2, trace_id=CLIENT_TRACE), "router route")
    assert front["parent_id"] == CLIENT_SPAN and route["parent_id"] == front["span_id"]
    agent = named(spans(files["heavy"], 2, trace_id=CLIENT_TRACE), "agent infer")
    assert agent["parent_id"] == route["span_id"]


def test_a_delegated_request_is_one_trace_across_both_replicas(cluster):
    """``chat`` cannot serve ``heavy``: it hands the request to the router, which sends it to ``heavy``."""
    _, replicas, files = cluster
    request = pb.ModelInferRequest(model_name="heavy", id="d1")
    metadata = (("x-capability-type", "heavy"), ("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
    with grpc.insecure_channel(replicas["chat"].endpoint) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        answer = infer(request, metadata=metadata, timeout=30)
    assert answer.parameters["anyserve.delegated_from"].string_param == "replica-chat"

    origin = named(spans(files["chat"], 1, trace_id=CLIENT_TRACE), "agent infer")
    front = named(spans(files["router"], 2, trace_id=CLIENT_TRACE), "router kserve /infer")
    route = named(spans(files["router"], 2, trace_id=CLIENT_TRACE), "router route")
    serving = spans(files["heavy"], 2, trace_id=CLIENT_TRACE)
    agent, worker = named(serving, "agent infer"), named(serving, "worker heavy_work")
    assert origin["parent_id"] == CLIENT_SPAN
    assert origin["attributes"]["anyserve.replica_id"] == "replica-chat"
    assert front["parent_id"] == origin["span_id"]
    assert route["parent_id"] == front["span_id"] and route["attributes"]["anyserve.replica_id"] == "replica-heavy"
    assert agent["parent_id"] == route["span_id"] and worker["parent_id"] == agent["span_id"]
    assert agent["attributes"]["anyserve.replica_id"] == "replica-heavy"


def test_an_error_sets_the_spans_status_with_its_code(cluster):
    router, _, files = cluster
    answer = httpx.post(f"{router.url}/infer", json=BODY, headers={"X-Capability-Type": "nothing"}, timeout=30)
    assert answer.status_code == 404
    front = named(spans(files["router"], 2), "router kserve /infer")
    route = named(spans(files["router"], 2), "router route")
    assert front["status"] == route["status"] == "ERROR"
    assert front["attributes"]["anyserve.error_code"] == "NOT_FOUND"
    assert front["attributes"]["http.response.status_code"] == 404


def test_off_writes_nothing(start_router, start_replica, tmp_path):
    """Tracing off (the default), with a file named: a request through every hop writes no span anywhere."""
    path = tmp_path / "spans.jsonl"
    named_only = {"ANYSERVE_TRACING_EXPORTER": "file", "ANYSERVE_TRACING_FILE": str(path)}
    router = start_router(**named_only)
    start_replica("cluster_apps:heavy", "--api-server", router.url, **named_only)
    wait_registered(router.url, 1)
    answer = httpx.post(f"{router.url}/infer", json=BODY, headers=HEAVY, timeout=30)
    assert answer.status_code == 200, answer.text
    time.sleep(1.0)  # a span would be written as its request ends: give a wrong one the time to show
    assert not path.exists()


def test_a_request_the_router_does_not_sample_is_traced_nowhere(start_router, start_replica, tmp_path):
    """The router samples nothing, the replica everything: the router's "not sampled" decides for every hop.

    Without it the replica, seeing no parent, would start traces of its own
    for requests whose first hop dropped them. A caller's sampled
    ``traceparent`` is followed all the same.
    """
    files = {name: tmp_path / f"{name}.jsonl" for name in ("router", "heavy")}
    router = start_router(**traced_env(files["router"]), ANYSERVE_TRACING_SAMPLE_RATIO="0")
    start_replica("cluster_apps:heavy", "--api-server", router.url, **traced_env(files["heavy"]))
    wait_registered(router.url, 1)
    for _ in range(3):
        answer = httpx.post(f"{router.url}/infer", json=BODY, headers=HEAVY, timeout=30)
        assert answer.status_code == 200, answer.text
    sampled = {**HEAVY, "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    assert httpx.post(f"{router.url}/infer", json=BODY, headers=sampled, timeout=30).status_code == 200
    replica = spans(files["heavy"], 2, trace_id=CLIENT_TRACE)
    assert {s["name"] for s in replica} >= {"agent infer"}
    time.sleep(1.0)  # a span is written as its request ends: give a wrong one the time to show
    assert {s["trace_id"] for s in spans(files["router"], 0)} == {CLIENT_TRACE}
    assert {s["trace_id"] for s in spans(files["heavy"], 0)} == {CLIENT_TRACE}


OFF_PROBE = """
import sys
from starlette.testclient import TestClient
from anyserve.config import load_settings
from anyserve_router.app import create_app

with TestClient(create_app(load_settings())) as client:
    answer = client.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "nothing"})
    assert answer.status_code == 404, answer.text
print("sdk imported" if "opentelemetry.sdk" in sys.modules else "sdk not imported")
"""


@pytest.mark.parametrize(("enabled", "expected"), [("", "sdk not imported"), ("true", "sdk imported")])
def test_off_imports_nothing_of_the_sdk(tmp_path, enabled, expected):
    """The router's application, a request through it, and the modules loaded: on, the same probe sees the SDK."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ANYSERVE_STATE_DIR": str(tmp_path / "state"),
        "ANYSERVE_TRACING": enabled,
        "ANYSERVE_TRACING_EXPORTER": "file",
        "ANYSERVE_TRACING_FILE": str(tmp_path / "spans.jsonl"),
    }
    done = subprocess.run(
        [sys.executable, "-c", OFF_PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == expected
    assert (tmp_path / "spans.jsonl").exists() == bool(enabled)


def test_a_stream_is_one_trace_and_a_failing_handler_marks_its_span(start_router, start_replica, tmp_path):
    files = {name: tmp_path / f"{name}.jsonl" for name in ("router", "echo")}
    router = start_router(**traced_env(files["router"]))
    start_replica("echo_app:app", "--api-server", router.url, **traced_env(files["echo"]))
    wait_registered(router.url, 1)
    with httpx.stream(
        "POST", f"{router.url}/infer/stream", json={"inputs": []}, headers={"X-Capability-Type": "chat"}, timeout=30
    ) as answer:
        assert answer.status_code == 200
        answer.read()
    front = named(spans(files["router"], 2), "router kserve /infer/stream")
    route = named(spans(files["router"], 2), "router route")
    replica = spans(files["echo"], 2, trace_id=front["trace_id"])
    agent, worker = named(replica, "agent stream"), named(replica, "worker chat_stream")
    assert route["parent_id"] == front["span_id"] and agent["parent_id"] == route["span_id"]
    assert worker["parent_id"] == agent["span_id"] and worker["status"] != "ERROR"

    with httpx.stream(
        "POST",
        f"{router.url}/infer/stream",
        json={"inputs": []},
        headers={"X-Capability-Type": "broken-stream"},
        timeout=30,
    ) as answer:
        answer.read()
    failed = [s for s in spans(files["echo"], 4) if s["name"] == "worker broken_stream"]
    assert len(failed) == 1 and failed[0]["status"] == "ERROR"
    assert failed[0]["attributes"]["anyserve.error_code"] == "RuntimeError"
    agent = [
        s for s in spans(files["echo"], 4) if s["trace_id"] == failed[0]["trace_id"] and s["name"] == "agent stream"
    ]
    assert agent[0]["status"] == "ERROR" and agent[0]["attributes"]["anyserve.error_code"] == "INTERNAL"


def test_otlp_without_its_exporter_names_the_extra(tmp_path):
    """The OTLP exporter is optional: asked for without it installed, the router refuses to start and says why."""
    pytest.importorskip("opentelemetry.sdk")
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP exporter is installed here")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANYSERVE_STATE_DIR": str(tmp_path), "ANYSERVE_TRACING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "router", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "anyserve-core[otlp]" in done.stderr


def test_a_handlers_call_through_the_router_continues_the_trace(start_router, start_replica, tmp_path):
    """``pipeline`` (on ``chat``) calls ``embed`` with ``context.call``: the second trip is under the worker's span."""
    files = {name: tmp_path / f"{name}.jsonl" for name in ("router", "chat", "embed")}
    router = start_router(**traced_env(files["router"]))
    for name in ("chat", "embed"):
        start_replica(f"cluster_apps:{name}", "--api-server", router.url, **traced_env(files[name]))
    wait_registered(router.url, 2)
    answer = httpx.post(f"{router.url}/infer", json=BODY, headers={"X-Capability-Type": "pipeline"}, timeout=30)
    assert answer.status_code == 200, answer.text
    fronts = [s for s in spans(files["router"], 4) if s["name"] == "router kserve /infer"]
    outer = next(s for s in fronts if s["parent_id"] is None)
    trace_id = outer["trace_id"]
    caller = named(spans(files["chat"], 2, trace_id=trace_id), "worker pipeline")
    inner = next(s for s in fronts if s["parent_id"] == caller["span_id"])
    assert inner["trace_id"] == trace_id
    inner_route = next(s for s in spans(files["router"], 4) if s["parent_id"] == inner["span_id"])
    embed_agent = named(spans(files["embed"], 2, trace_id=trace_id), "agent infer")
    assert embed_agent["parent_id"] == inner_route["span_id"]


def test_the_calls_an_unsampled_request_makes_are_traced_nowhere(start_router, start_replica, tmp_path):
    """A caller's "not sampled" holds for the whole request: the handler's ``context.call`` and the delegation too.

    The router samples every new trace here, so a call back to it that lost
    the decision would start one of its own. The worker is sent no trace
    fields for an unsampled request (it never decides for itself) and tells
    the router "not sampled" on its calls.
    """
    files = {name: tmp_path / f"{name}.jsonl" for name in ("router", "chat", "embed", "heavy")}
    router = start_router(**traced_env(files["router"]))
    replicas = {
        name: start_replica(f"cluster_apps:{name}", "--api-server", router.url, **traced_env(files[name]))
        for name in ("chat", "embed", "heavy")
    }
    wait_registered(router.url, 3)
    unsampled = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"}
    answer = httpx.post(
        f"{router.url}/infer", json=BODY, headers={"X-Capability-Type": "pipeline", **unsampled}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    request = pb.ModelInferRequest(model_name="heavy", id="d1")
    with grpc.insecure_channel(replicas["chat"].endpoint) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        delegated = infer(request, metadata=(("x-capability-type", "heavy"), *unsampled.items()), timeout=30)
    assert delegated.parameters["anyserve.delegated_from"].string_param
    time.sleep(1.0)  # a span is written as its request ends: give a wrong one the time to show
    written = {path.name: path.read_text()[:300] for path in files.values() if path.exists()}
    assert not any(written.values()), written
