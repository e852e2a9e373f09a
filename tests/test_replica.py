"""A replica end to end: `anyserve start`, real gRPC, real worker processes.

Every test that can runs over both transports (`transport` fixture): swapping
the IPC is configuration only.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from kserve import output, request, tokens
from processes import free_port, group_pids, run_anyserve

from anyserve.protocol import messages as pb


def test_health_and_metadata(start_replica, transport, wire_for):
    replica = start_replica(transport=transport)
    wire = wire_for(replica.endpoint)
    assert wire.stub.ServerLive(pb.ServerLiveRequest()).live
    assert wire.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert wire.stub.ServerMetadata(pb.ServerMetadataRequest()).name == "anyserve"
    assert wire.stub.ModelReady(pb.ModelReadyRequest(name="echo")).ready
    assert not wire.stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready
    assert wire.stub.ModelMetadata(pb.ModelMetadataRequest(name="add")).name == "add"
    with pytest.raises(grpc.RpcError) as info:
        wire.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_query_from_metadata_parameters_or_model_name(start_replica, transport, wire_for):
    wire = wire_for(start_replica(transport=transport).endpoint)
    # every metadata key reaches matching, not only type and model
    eu = wire.infer(request(x=[1]), {"type": "chat", "model": "tiny", "region": "eu"})
    assert eu.parameters["served_by"].string_param == "chat-eu"
    with pytest.raises(grpc.RpcError) as info:
        wire.infer(request(x=[1]), {"type": "chat", "region": "us"})
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # request parameters
    req = request(x=[1])
    req.parameters["capability.type"].string_param = "chat"
    req.parameters["capability.region"].string_param = "eu"
    assert wire.infer(req).parameters["served_by"].string_param == "chat-eu"
    # plain KServe: model_name -> type, model_version -> model
    assert output(wire.infer(request("add", a=[1, 2, 3], b=[10, 20, 30])), "sum") == [11, 22, 33]
    plain = request("chat", x=[1])
    plain.model_version = "tiny"
    assert wire.infer(plain).parameters["served_by"].string_param == "chat-eu"


def test_async_handlers_and_bytes_round_trip(start_replica, transport, wire_for):
    wire = wire_for(start_replica(transport=transport).endpoint)
    blob = os.urandom(3 * 1024 * 1024)
    response = wire.infer(request(data=[blob, b""]), {"type": "echo", "variant": "async"})
    assert output(response, "output_data") == [blob, b""]
    assert response.id == "t1"


def test_handler_exception_is_internal_with_type_and_message(start_replica, transport, wire_for):
    wire = wire_for(start_replica(transport=transport).endpoint)
    with pytest.raises(grpc.RpcError) as info:
        wire.infer(request("boom"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "ValueError: the handler failed on purpose" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        wire.infer(request("wrong-return"))
    assert info.value.code() == grpc.StatusCode.INTERNAL and "returned int" in info.value.details()
    assert output(wire.infer(request("echo", x=[5])), "output_x") == [5]  # the replica keeps serving


def test_unknown_capability_names_query_and_offers(start_replica, transport, wire_for):
    wire = wire_for(start_replica(transport=transport).endpoint)
    with pytest.raises(grpc.RpcError) as info:
        wire.infer(request(x=[1]), {"type": "translate", "lang": "fr"})
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    details = info.value.details()
    assert "{'type': 'translate', 'lang': 'fr'}" in details
    assert "'type': 'echo'" in details and "'type': 'add'" in details


def test_malformed_input_is_invalid_argument(start_replica, transport, wire_for):
    wire = wire_for(start_replica(transport=transport).endpoint)
    garbage = b"\xff\xff\xff\xff not a protobuf"
    with pytest.raises(grpc.RpcError) as info:
        wire.raw_infer(garbage, timeout=10)  # parsed by the agent (no metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ModelInferRequest" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        wire.raw_infer(garbage, metadata=[("x-capability-type", "echo")], timeout=10)  # parsed by the worker
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversize_message_names_the_limit(start_replica, transport, wire_for):
    wire = wire_for(start_replica("echo_app:app", "--max-message-bytes", "1048576", transport=transport).endpoint)
    with pytest.raises(grpc.RpcError) as info:
        wire.infer(request("echo", data=[b"x" * (2 * 1024 * 1024)]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1048576" in info.value.details() and "max_message_bytes" in info.value.details()
    assert output(wire.infer(request("echo", x=[1])), "output_x") == [1]


def test_stream_tokens_and_final_marker(start_replica, transport, wire_for):
    wire = wire_for(start_replica(transport=transport).endpoint)
    responses = list(wire.stream([request("chat")]))
    assert tokens(responses) == ["Hello", " ", "world", "!"]
    assert responses[-2].infer_response.outputs[1].contents.bytes_contents == [b"stop"]
    assert responses[-1].infer_response.parameters["triton_final_response"].bool_param
    # two requests on one stream: each gets its own run
    both = list(wire.stream([request("chat"), request("chat")]))
    assert tokens(both) == ["Hello", " ", "world", "!"] * 2


def test_stream_error_is_an_error_response_then_the_end(start_replica, transport, wire_for):
    wire = wire_for(start_replica(transport=transport).endpoint)
    responses = list(wire.stream([request("broken-stream")]))
    assert tokens(responses) == ["partial"]
    assert "RuntimeError: the stream failed on purpose" in responses[-1].error_message
    responses = list(wire.stream([request("nope")]))
    assert len(responses) == 1 and responses[0].error_message.startswith("NOT_FOUND")


def test_deadline_cancels_the_handler(start_replica, transport, wire_for, tmp_path: Path):
    wire = wire_for(start_replica(transport=transport).endpoint)
    marker = tmp_path / "cancelled"
    req = request("slow", seconds=[30.0])
    req.parameters["marker"].string_param = str(marker)
    with pytest.raises(grpc.RpcError) as info:
        wire.infer(req, timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "cancelled"


def test_client_cancel_stops_a_stream_handler(start_replica, transport, wire_for, tmp_path: Path):
    wire = wire_for(start_replica(transport=transport).endpoint)
    marker = tmp_path / "stopped"
    req = request("ticker")
    req.parameters["marker"].string_param = str(marker)
    call = wire.stream([req])
    received = [next(call) for _ in range(3)]
    assert tokens(received) == ["0", "1", "2"]
    call.cancel()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the stream handler kept producing after the client cancelled"
    assert int(marker.read_text()) < 1000


def test_workers_share_the_load(start_replica, wire_for):
    wire = wire_for(start_replica(transport="unix", workers=3).endpoint)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: wire.infer(request("slow", seconds=[0.3])), range(12)))
    pids = {output(r, "pid")[0] for r in responses}
    assert len(pids) >= 2, f"all requests went to one worker: {pids}"


def test_killed_worker_fails_in_flight_promptly_and_is_restarted(start_replica, wire_for):
    replica = start_replica(transport="unix", workers=1)
    wire = wire_for(replica.endpoint)
    worker_pid = output(wire.infer(request("echo")), "pid")[0]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(wire.infer, request("slow", seconds=[30.0]), None, 60) for _ in range(4)]
        time.sleep(0.5)
        os.kill(worker_pid, signal.SIGKILL)
        started = time.monotonic()
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call.result(timeout=20)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 10
    deadline = time.monotonic() + 30
    while True:
        try:
            new_pid = output(wire.infer(request("echo")), "pid")[0]
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.2)
    assert new_pid != worker_pid


def test_sigterm_drains_in_flight_then_leaves_nothing_behind(start_replica, transport, wire_for):
    replica = start_replica(transport=transport, workers=2 if transport == "unix" else 1)
    wire = wire_for(replica.endpoint)
    assert len(group_pids(replica.pid)) >= (3 if transport == "unix" else 1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(wire.infer, request("slow", seconds=[1.0]))
        time.sleep(0.3)
        replica.process.signal(signal.SIGTERM)
        assert output(call.result(timeout=20), "pid")  # the in-flight request finished
    assert replica.process.proc.wait(timeout=20) == 0
    deadline = time.monotonic() + 10
    while group_pids(replica.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_pids(replica.pid) == []


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("nosuch_module:app", "cannot import app 'nosuch_module:app': no module named 'nosuch_module'"),
        ("broken_app:app", "RuntimeError: this module fails to import on purpose"),
        ("echo_app:missing", "has no attribute 'missing'"),
        ("empty_app:app", "no handler is defined"),
    ],
)
def test_start_refuses_bad_apps_with_a_clear_message(app, expected):
    process = run_anyserve("start", "--app", app, "--port", str(free_port()))
    assert process.proc.wait(timeout=30) != 0
    out = process.output()
    assert expected in out
    assert "Traceback" not in out


def test_start_refuses_a_taken_port(start_replica):
    replica = start_replica()
    port = replica.endpoint.rsplit(":", 1)[1]
    process = run_anyserve("start", "--app", "echo_app:app", "--port", port)
    assert process.proc.wait(timeout=30) != 0
    assert "already in use" in process.output()


def test_start_refuses_an_unknown_transport():
    process = run_anyserve(
        "start", "--app", "echo_app:app", "--port", str(free_port()), "--transport", "carrier-pigeon"
    )
    assert process.proc.wait(timeout=30) == 2
    out = process.output()
    assert "no IPC transport named 'carrier-pigeon'" in out and "unix" in out and "inproc" in out
