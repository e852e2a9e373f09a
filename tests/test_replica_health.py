"""Standard gRPC health checking and reflection on a replica, as probes and grpcurl use them.

Real `anyserve start` processes with real worker processes (unix transport);
the clients are grpcio's own health stub and reflection client, so what
passes here is what grpc_health_probe, Kubernetes gRPC probes and grpcurl see.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from anyserve import Client, InferenceError
from anyserve.config import load_settings
from anyserve.credentials import Credentials

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INFERENCE = "inference.GRPCInferenceService"


@pytest.fixture
def channel_to() -> Iterator:
    channels: list[grpc.Channel] = []

    def make(endpoint: str) -> grpc.Channel:
        channels.append(grpc.insecure_channel(endpoint))
        return channels[-1]

    yield make
    for channel in channels:
        channel.close()


def check(channel: grpc.Channel, service: str) -> int | grpc.StatusCode:
    """The serving status, or the call's error code (NOT_FOUND for an unknown service)."""
    request = health_pb2.HealthCheckRequest(service=service)
    try:
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status
    except grpc.RpcError as exc:
        return exc.code()


def status(channel: grpc.Channel) -> dict:
    metadata = [("authorization", f"Bearer {Credentials.load(load_settings()).cluster}")]
    return json.loads(channel.unary_unary("/anyserve.ReplicaStatus/Get")(b"", timeout=10, metadata=metadata))


def test_whole_replica_and_each_capability(start_replica, channel_to):
    channel = channel_to(start_replica("echo_app:app", transport="unix").endpoint)
    assert check(channel, "") == SERVING
    assert check(channel, INFERENCE) == SERVING
    assert check(channel, "echo") == SERVING  # {type: echo}
    assert check(channel, "chat") == SERVING  # {type: chat}: any chat capability
    assert check(channel, "chat/tiny") == SERVING  # {type: chat, model: tiny}
    assert check(channel, "nope") == grpc.StatusCode.NOT_FOUND
    assert check(channel, "chat/huge") == grpc.StatusCode.NOT_FOUND


def test_a_capability_whose_only_worker_was_killed_is_not_serving_until_restarted(start_replica, channel_to):
    channel = channel_to(start_replica("echo_app:app", transport="unix", workers=1).endpoint)
    (worker,) = status(channel)["workers"]
    assert check(channel, "echo") == SERVING
    os.kill(worker["pid"], signal.SIGKILL)
    seen: dict[str, set] = {"echo": set(), "": set()}
    deadline = time.monotonic() + 30
    # The supervisor restarts it after a back-off (0.2 s at least): poll through that window until it is back.
    while NOT_SERVING not in seen["echo"] or check(channel, "echo") != SERVING:
        assert time.monotonic() < deadline, f"statuses seen: {seen}"
        for service in seen:
            seen[service].add(check(channel, service))
        time.sleep(0.01)
    assert NOT_SERVING in seen["echo"]
    assert NOT_SERVING in seen[""]  # its only worker down, the replica offers nothing: ServerReady is false too
    assert check(channel, "nope") == grpc.StatusCode.NOT_FOUND  # unknown stays unknown throughout
    (restarted,) = status(channel)["workers"]
    assert restarted["pid"] != worker["pid"] and restarted["alive"]
    assert check(channel, "") == SERVING


def test_cold_worker_classes_serve_and_failed_ones_do_not(start_replica, channel_to):
    replica = start_replica("dynamic_app:app", transport="unix", ANYSERVE_TEST_START_DELAY="0")
    channel = channel_to(replica.endpoint)
    assert {c["worker"]: c["state"] for c in status(channel)["worker_classes"]}["Broken"] == "cold"
    assert check(channel, "chat/small") == SERVING  # cold: started by the first request
    assert check(channel, "broken") == SERVING
    with Client(replica.endpoint, timeout=30) as client:
        for _ in range(3):  # on_start raises: three failed starts mark the class failed
            with pytest.raises(InferenceError):
                client.infer("broken", capability={"type": "broken"})
    assert {c["worker"]: c["state"] for c in status(channel)["worker_classes"]}["Broken"] == "failed"
    assert check(channel, "broken") == NOT_SERVING
    assert check(channel, "chat/small") == SERVING  # the rest is unaffected
    assert check(channel, "") == SERVING


def test_watch_starts_with_the_status_and_ends_when_cancelled(start_replica, channel_to):
    channel = channel_to(start_replica("echo_app:app", transport="unix").endpoint)
    stub = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="echo"), timeout=30)
    assert next(watch).status == SERVING
    watch.cancel()
    with pytest.raises(grpc.RpcError) as info:
        next(watch)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert check(channel, "echo") == SERVING  # the replica is unaffected


def test_an_open_watch_ends_at_shutdown_without_holding_it(start_replica, channel_to):
    replica = start_replica("echo_app:app", transport="unix")
    stub = health_pb2_grpc.HealthStub(channel_to(replica.endpoint))
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    assert next(watch).status == SERVING
    began = time.monotonic()
    replica.process.signal(signal.SIGTERM)
    assert next(watch).status == NOT_SERVING
    with pytest.raises(StopIteration):
        next(watch)
    assert watch.code() == grpc.StatusCode.OK
    assert replica.process.proc.wait(timeout=20) == 0
    assert time.monotonic() - began < 5  # not the 10 s shutdown grace an open call would otherwise hold


def test_reflection_lists_and_describes_the_services(start_replica, channel_to):
    channel = channel_to(start_replica("echo_app:app", transport="unix").endpoint)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert services == {INFERENCE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    methods = {m.name for m in DescriptorPool(database).FindServiceByName(INFERENCE).methods}
    assert {"ServerReady", "ModelReady", "ModelMetadata", "ModelInfer", "ModelStreamInfer"} <= methods
    health = DescriptorPool(database).FindServiceByName("grpc.health.v1.Health")
    assert {"Check", "Watch"} <= {m.name for m in health.methods}
