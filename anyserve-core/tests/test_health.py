"""The generic ``grpc.health.v1`` servicer and reflection, on a real grpc.aio server on a loopback port.

The status function here is a fake of a server's state (a dict the test
changes): what is under test is the health protocol, not what a replica
considers healthy (tests/test_replica_health.py covers that).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from anyserve.protocol.health import (
    HEALTH_SERVICE,
    INFERENCE_SERVICE,
    NOT_SERVING,
    REFLECTION_SERVICE,
    SERVICE_UNKNOWN,
    SERVING,
    HealthServicer,
    add_health,
    enable_reflection,
)

INTERVAL = 0.05


class FakeState:
    """Stands in for a server's state: service name -> True, False, or absent (unknown)."""

    def __init__(self, **services: bool) -> None:
        self.services: dict[str, bool] = {"": True, **services}
        self.calls = 0

    def status(self, service: str) -> bool | None:
        self.calls += 1
        return self.services.get(service)


@asynccontextmanager
async def health_server(state: FakeState, **options) -> AsyncIterator[tuple[HealthServicer, grpc.aio.Channel]]:
    server = grpc.aio.server()
    servicer = HealthServicer(state.status, services=lambda: list(state.services), interval=INTERVAL, **options)
    add_health(server, servicer)
    enable_reflection(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, channel
    finally:
        await channel.close()
        await server.stop(None)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def check(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status


async def next_status(call: grpc.aio.UnaryStreamCall) -> int:
    return (await asyncio.wait_for(call.read(), 5)).status


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_check_answers_from_the_state_at_call_time():
    async def main() -> None:
        state = FakeState(chat=True)
        async with health_server(state) as (_, channel):
            assert await check(channel, "") == SERVING
            assert await check(channel, "chat") == SERVING
            state.services["chat"] = False
            assert await check(channel, "chat") == NOT_SERVING
            state.services["chat"] = True
            assert await check(channel, "chat") == SERVING

    run(main)


def test_check_of_an_unknown_service_is_not_found():
    async def main() -> None:
        async with health_server(FakeState()) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await check(channel, "nope")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "'nope'" in info.value.details()

    run(main)


def test_a_failing_status_function_is_internal_with_its_error():
    def status(service: str) -> bool | None:
        raise RuntimeError("state unreadable")

    async def main() -> None:
        server = grpc.aio.server()
        add_health(server, HealthServicer(status))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await check(channel, "")
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "state unreadable" in info.value.details()
        finally:
            await server.stop(None)

    run(main)


def test_list_reports_every_service_with_its_status():
    async def main() -> None:
        state = FakeState(chat=True, embed=False)
        async with health_server(state) as (_, channel):
            stub = health_pb2_grpc.HealthStub(channel)
            listed = await stub.List(health_pb2.HealthListRequest(), timeout=5)
            assert {k: v.status for k, v in listed.statuses.items()} == {
                "": SERVING,
                "chat": SERVING,
                "embed": NOT_SERVING,
            }

    run(main)


def test_watch_sends_the_current_status_then_each_change():
    async def main() -> None:
        state = FakeState(chat=True)
        async with health_server(state) as (servicer, channel):
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(health_pb2.HealthCheckRequest(service="chat"))
            assert await next_status(call) == SERVING
            state.services["chat"] = False
            assert await next_status(call) == NOT_SERVING
            state.services["chat"] = True
            assert await next_status(call) == SERVING
            # An unchanged status is not sent again: nothing arrives over several polls.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(call.read()), 5 * INTERVAL)
            assert servicer.watchers == 1
            call.cancel()
            await until(lambda: servicer.watchers == 0)
            assert call.cancelled()

    run(main)


def test_watch_of_an_unknown_service_says_so_and_keeps_watching():
    async def main() -> None:
        state = FakeState()
        async with health_server(state) as (_, channel):
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="chat"))
            assert await next_status(call) == SERVICE_UNKNOWN
            state.services["chat"] = True  # the service appears later
            assert await next_status(call) == SERVING
            call.cancel()

    run(main)


def test_watches_are_capped():
    async def main() -> None:
        async with health_server(FakeState(), max_watchers=1) as (servicer, channel):
            stub = health_pb2_grpc.HealthStub(channel)
            first = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            assert await next_status(first) == SERVING
            second = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await second.read()
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.cancel()
            await until(lambda: servicer.watchers == 0)
            third = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            assert await next_status(third) == SERVING  # a closed watch frees its place
            third.cancel()

    run(main)


def test_shutdown_makes_everything_not_serving_and_ends_watches():
    async def main() -> None:
        state = FakeState(chat=True)
        async with health_server(state) as (servicer, channel):
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(health_pb2.HealthCheckRequest(service="chat"))
            assert await next_status(call) == SERVING
            servicer.shutdown()
            assert await next_status(call) == NOT_SERVING
            assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            await until(lambda: servicer.watchers == 0)  # the server side ends just after the client sees EOF
            assert await check(channel, "") == NOT_SERVING
            assert await check(channel, "chat") == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await check(channel, "nope")  # still unknown, not merely not serving
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            late = stub.Watch(health_pb2.HealthCheckRequest(service="chat"))
            assert await next_status(late) == NOT_SERVING
            assert await asyncio.wait_for(late.read(), 5) is grpc.aio.EOF

    run(main)


def test_a_shutdown_while_a_status_is_being_written_still_ends_with_not_serving():
    """The shutdown lands while the watch's first write is on its way: the watch must poll once more."""

    async def main() -> None:
        state = FakeState(chat=True)
        async with health_server(state) as (servicer, channel):

            def status_then_shut_down(service: str) -> bool | None:
                servicer.status = state.status
                asyncio.get_running_loop().call_soon(servicer.shutdown)  # runs while SERVING is being written
                return state.status(service)

            servicer.status = status_then_shut_down
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="chat"))
            statuses = [response.status async for response in call]
            assert statuses == [SERVING, NOT_SERVING]
            assert await call.code() == grpc.StatusCode.OK

    run(main)


def test_reflection_lists_and_describes_the_services():
    def describe(address: str) -> tuple[set[str], set[str]]:
        """What a reflection client (synchronous, as grpcurl-like tools are) learns."""
        with grpc.insecure_channel(address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            methods = {m.name for m in DescriptorPool(database).FindServiceByName(INFERENCE_SERVICE).methods}
        return services, methods

    async def main() -> None:
        server = grpc.aio.server()
        add_health(server, HealthServicer(FakeState().status))
        assert enable_reflection(server) == (INFERENCE_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            services, methods = await asyncio.to_thread(describe, f"127.0.0.1:{port}")
        finally:
            await server.stop(None)
        assert services == {INFERENCE_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE}
        assert {"ModelInfer", "ModelStreamInfer", "ServerReady", "ModelMetadata"} <= methods

    run(main)
