"""The router's KServe v2 gRPC front (``anyserve router --grpc-port``), end to end.

A real router with a real replica registered; a plain gRPC client (the
KServe v2 stubs) talks to the router's gRPC port exactly as it would talk
to a single server: routing by model name or ``x-capability-*`` metadata,
streams, metadata, readiness, standard health checks and reflection.
"""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from kserve import Wire, output, request
from processes import free_port, run_anyserve
from router_http import ECHO_APP, member_headers, register

from anyserve.protocol import is_final
from anyserve.protocol import messages as pb


@pytest.fixture
def front(start_router, start_replica):
    """A KServe v2 gRPC client of a router serving gRPC, with one echo_app replica registered."""
    grpc_port = free_port()
    router = start_router("--grpc-port", str(grpc_port))
    assert f"KServe v2 gRPC at 127.0.0.1:{grpc_port}" in router.process.wait_for(" ready at ")
    replica = start_replica(transport="inproc")
    with httpx.Client(base_url=router.url, timeout=30, headers=member_headers()) as http:
        register(http, "echo-replica", replica.endpoint, ECHO_APP, replica.link)
    wire = Wire(f"127.0.0.1:{grpc_port}")
    yield wire
    wire.close()


def test_unary_by_model_name_and_by_capability_metadata(front):
    wire = front
    by_name = wire.infer(request("add", a=[1, 2], b=[10, 20]))
    assert output(by_name, "sum") == [11, 22]
    by_metadata = wire.infer(request("ignored", x=[7]), {"type": "chat", "model": "tiny"})
    assert by_metadata.parameters["served_by"].string_param == "chat-eu"
    call = wire.stub.ModelInfer.with_call(request("echo", x=[1]), timeout=30)[1]
    assert ("x-served-by", "echo-replica") in call.initial_metadata()


def test_unknown_capability_is_not_found_with_the_routers_message(front):
    wire = front
    with pytest.raises(grpc.RpcError) as info:
        wire.infer(request("nope", x=[1]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no live replica offers" in info.value.details()


def test_stream_runs_end_with_a_final_marker_and_errors_stay_in_the_stream(front):
    wire = front
    chat = request("chat")
    missing = request("nope")
    responses = list(wire.stream([chat, missing, chat]))
    texts = [r.infer_response.outputs[0].contents.bytes_contents[0] for r in responses if r.infer_response.outputs]
    assert b"".join(texts) == b"Hello world!Hello world!"
    finals = [r for r in responses if is_final(r.infer_response)]
    assert len(finals) == 3  # one per request; the failed one carries the error
    assert [r.error_message.split(":")[0] for r in finals if r.error_message] == ["NOT_FOUND"]


def test_model_metadata_lists_the_declared_tensors_and_readiness(front):
    wire = front
    metadata = wire.stub.ModelMetadata(pb.ModelMetadataRequest(name="add"), timeout=30)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("a", "INT64", [-1]),
        ("b", "INT64", [-1]),
    ]
    assert [(t.name, t.datatype) for t in metadata.outputs] == [("sum", "INT64")]
    assert wire.stub.ModelReady(pb.ModelReadyRequest(name="add"), timeout=30).ready
    assert not wire.stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=30).ready
    assert wire.stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    assert wire.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=30).name == "anyserve-router"
    with pytest.raises(grpc.RpcError) as info:
        wire.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(front):
    wire = front
    health = health_pb2_grpc.HealthStub(wire.channel)
    check = health_pb2.HealthCheckRequest
    assert health.Check(check(service=""), timeout=30).status == health_pb2.HealthCheckResponse.SERVING
    assert health.Check(check(service="add"), timeout=30).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(check(service="nope"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    services = set(ProtoReflectionDescriptorDatabase(wire.channel).get_services())
    assert "inference.GRPCInferenceService" in services and "grpc.health.v1.Health" in services


def test_http_model_metadata_names_the_tensors(start_router, start_replica):
    router = start_router()
    replica = start_replica(transport="inproc")
    with httpx.Client(base_url=router.url, timeout=30, headers=member_headers()) as http:
        register(http, "echo-replica", replica.endpoint, ECHO_APP)
        body = http.get("/v2/models/add").json()
        assert body["name"] == "add" and body["platform"] == "anyserve"
        assert body["inputs"] == [
            {"name": "a", "datatype": "INT64", "shape": [-1]},
            {"name": "b", "datatype": "INT64", "shape": [-1]},
        ]
        assert body["outputs"] == [{"name": "sum", "datatype": "INT64", "shape": [-1]}]
        missing = http.get("/v2/models/nope")
        assert missing.status_code == 404 and "no live replica" in missing.json()["error"]


def test_a_taken_grpc_port_fails_start_up_and_names_it(start_router):
    router = start_router()
    taken = router.url.rsplit(":", 1)[1]
    process = run_anyserve("router", "--port", str(free_port()), "--grpc-port", taken)
    try:
        assert process.proc.wait(timeout=30) == 1
        assert f"cannot listen on 127.0.0.1:{taken} for gRPC" in process.output()
    finally:
        process.kill_group()


def test_a_request_over_the_body_limit_is_refused_by_the_grpc_front(start_router, tmp_path):
    config = tmp_path / "anyserve.toml"
    config.write_text("[router]\nmax_body_bytes = 4096\n")
    grpc_port = free_port()
    start_router("--grpc-port", str(grpc_port), "--config", str(config))
    wire = Wire(f"127.0.0.1:{grpc_port}")
    try:
        with pytest.raises(grpc.RpcError) as info:
            wire.infer(request("echo", x=[b"x" * 8192]))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # small requests still get through to routing (here: nobody offers echo)
        with pytest.raises(grpc.RpcError) as info:
            wire.infer(request("echo", x=[1]))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        wire.close()


def test_calls_past_max_grpc_calls_are_refused_at_once_not_queued(start_router, start_replica, tmp_path):
    """One slow call holds the router's only gRPC call slot: the next is RESOURCE_EXHAUSTED at once, then served."""
    config = tmp_path / "anyserve.toml"
    config.write_text("[router]\nmax_grpc_calls = 1\n")
    grpc_port = free_port()
    router = start_router("--grpc-port", str(grpc_port), "--config", str(config))
    replica = start_replica(transport="inproc")
    with httpx.Client(base_url=router.url, timeout=30, headers=member_headers()) as http:
        register(http, "echo-replica", replica.endpoint, ECHO_APP, replica.link)
    holder, wire = Wire(f"127.0.0.1:{grpc_port}"), Wire(f"127.0.0.1:{grpc_port}")
    try:
        slow = holder.stub.ModelInfer.future(request("slow", x=[3.0]), timeout=30)
        time.sleep(0.5)  # the slow call has the slot
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            wire.infer(request("echo", x=[1]))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 2.0  # refused, not queued behind the slow one
        slow.result()
        assert wire.infer(request("echo", x=[1])) is not None  # the slot is free again
    finally:
        holder.close()
        wire.close()
