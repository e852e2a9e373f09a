"""Behaviour beyond the contract: socket files, limits, shutdown and misbehaving peers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from anyserve.errors import AnyServeError, ResourceExhausted, Unavailable
from anyserve.testing import ContractService
from anyserve.transport import Query
from anyserve_transport_unix import UnixTransport, framing
from anyserve_transport_unix.frames_pb2 import Frame, Hello

Run = Callable[[Awaitable[Any]], Any]


@contextlib.asynccontextmanager
async def serving(address: str, service: Any, transport: UnixTransport | None = None) -> AsyncIterator[asyncio.Task]:
    server = asyncio.create_task((transport or UnixTransport()).serve(address, service))
    try:
        while not os.path.exists(address) and not server.done():
            await asyncio.sleep(0.005)
        yield server
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


class BigAnswers(ContractService):
    """Answers ``b"big:<n>"`` with n bytes."""

    async def infer(self, payload: bytes, query: Query) -> bytes:
        if payload.startswith(b"big:"):
            return b"x" * int(payload[4:])
        return await super().infer(payload, query)


def test_socket_is_private_and_removed_on_cancel(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")
    service = ContractService()

    async def main() -> None:
        async with serving(address, service):
            assert stat.S_IMODE(os.stat(address).st_mode) == 0o600
            conn = await UnixTransport().connect(address, timeout=5)
            blocked = asyncio.create_task(conn.infer(b"block", {}))
            await service.started.wait()
        # serve() was cancelled with a request in flight
        assert not os.path.exists(address)
        assert service.cancelled.is_set()
        with pytest.raises(Unavailable, match="went away"):
            await blocked
        await conn.close()

    arun(main())


def test_stale_socket_file_is_replaced(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(address)  # bound, never listening: what a killed worker leaves behind
    stale.close()

    async def main() -> None:
        async with serving(address, ContractService()):
            conn = await UnixTransport().connect(address, timeout=5)
            assert await conn.infer(b"x", {}) == b"x|"
            await conn.close()

    arun(main())


def test_refuses_to_replace_a_regular_file(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")
    with open(address, "w") as f:
        f.write("precious")
    with pytest.raises(Unavailable, match="not a socket"):
        arun(UnixTransport().serve(address, ContractService()))
    with open(address) as f:
        assert f.read() == "precious"


def test_refuses_to_steal_a_live_workers_socket(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")

    async def main() -> None:
        async with serving(address, ContractService()):
            with pytest.raises(Unavailable, match="already served by a live worker"):
                await UnixTransport().serve(address, ContractService())
            conn = await UnixTransport().connect(address, timeout=5)  # the first one still serves
            assert await conn.infer(b"x", {}) == b"x|"
            await conn.close()

    arun(main())


def test_agent_closing_cancels_worker_handlers(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")
    service = ContractService()

    async def main() -> None:
        async with serving(address, service):
            conn = await UnixTransport().connect(address, timeout=5)
            calls = [asyncio.create_task(conn.infer(b"block", {})) for _ in range(3)]
            await service.started.wait()
            await conn.close()
            assert conn.closed
            for call in calls:
                with pytest.raises(Unavailable, match="was closed"):
                    await call
            await asyncio.wait_for(service.cancelled.wait(), 5)
            with pytest.raises(Unavailable):
                await conn.infer(b"x", {})

    arun(main())


def test_oversize_request_is_refused_locally(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")
    transport = UnixTransport(max_frame_bytes=4096)

    async def main() -> None:
        async with serving(address, ContractService(), transport):
            conn = await transport.connect(address, timeout=5)
            with pytest.raises(ResourceExhausted, match="max_frame_bytes=4096"):
                await conn.infer(b"x" * 5000, {})
            assert conn.in_flight == 0 and not conn.closed
            assert await conn.infer(b"x", {}) == b"x|"
            await conn.close()

    arun(main())


def test_oversize_response_fails_only_its_request(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")
    transport = UnixTransport(max_frame_bytes=4096)

    async def main() -> None:
        async with serving(address, BigAnswers(), transport):
            conn = await transport.connect(address, timeout=5)
            with pytest.raises(AnyServeError) as info:
                await conn.infer(b"big:5000", {})
            assert info.value.code == "RESOURCE_EXHAUSTED" and "max_frame_bytes=4096" in info.value.message
            assert len(await conn.infer(b"big:4000", {})) == 4000
            await conn.close()

    arun(main())


def test_worker_closes_on_oversize_frame_and_says_why(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")

    async def main() -> None:
        async with serving(address, ContractService(), UnixTransport(max_frame_bytes=4096)):
            conn = await UnixTransport().connect(address, timeout=5)  # agent allows more than the worker
            with pytest.raises(Unavailable, match=r"closed the connection: worker: frame of \d+ bytes exceeds"):
                await conn.infer(b"x" * 5000, {})
            assert conn.closed

    arun(main())


async def fake_worker(address: str, script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await script(reader, writer)
            await reader.read()  # hold the connection until the agent leaves
        writer.close()

    return await asyncio.start_unix_server(handle, address)


def hello(version: int = framing.PROTOCOL_VERSION) -> bytes:
    return framing.encode(Frame(hello=Hello(version=version, json='{"pid": 42, "capabilities": []}')))


def test_agent_closes_on_oversize_frame_from_worker(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(hello())
        await framing.read(reader, 1 << 20)  # the request
        writer.write((1 << 30).to_bytes(4, "big"))  # announces 1 GiB, sends nothing

    async def main() -> None:
        server = await fake_worker(address, script)
        async with server:
            conn = await UnixTransport().connect(address, timeout=5)
            with pytest.raises(Unavailable, match=r"worker 42 at .* broke the wire protocol: frame of 1073741824"):
                await conn.infer(b"x", {})
            assert conn.closed
            await conn.close()

    arun(main())


def test_unknown_protocol_version_is_refused(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(hello(version=99))

    async def main() -> None:
        async with await fake_worker(address, script):
            with pytest.raises(Unavailable, match="protocol 99"):
                await UnixTransport().connect(address, timeout=5)

    arun(main())


def test_connect_names_the_address_when_nobody_serves(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "nobody.sock")
    with pytest.raises(Unavailable, match=f"nothing is serving {address}"):
        arun(UnixTransport().connect(address, timeout=0.2))


def test_streams_and_unary_interleave_on_one_connection(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")

    async def collect(conn: Any, count: int) -> list[bytes]:
        return [chunk async for chunk in conn.stream(str(count).encode(), {})]

    async def main() -> None:
        async with serving(address, ContractService()):
            conn = await UnixTransport().connect(address, timeout=5)
            streams = [collect(conn, 20 + i) for i in range(20)]
            unary = [conn.infer(f"sleep:0.00{i % 5}:{i}".encode(), {}) for i in range(20)]
            results = await asyncio.gather(*streams, *unary)
            for i, got in enumerate(results[:20]):
                assert got == [f"{n}:{20 + i}".encode() for n in range(20 + i)]
            assert [r.split(b"|")[0] for r in results[20:]] == [f"sleep:0.00{i % 5}:{i}".encode() for i in range(20)]
            assert conn.in_flight == 0
            await conn.close()

    arun(main())


class BrokenHello(ContractService):
    def hello(self) -> dict[str, Any]:
        return {"pid": object()}  # not JSON


def test_broken_hello_is_reported_to_the_agent(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")

    async def main() -> None:
        async with serving(address, BrokenHello()):
            with pytest.raises(Unavailable, match=r"refused the connection: worker: hello\(\) failed: TypeError"):
                await UnixTransport().connect(address, timeout=5)

    arun(main())


class Counting(ContractService):
    """Streams ``count`` chunks as fast as it may, counting what it produced."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.produced = 0

    async def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        for i in range(self.count):
            self.produced += 1
            yield b"%d" % i


def test_a_stream_runs_at_most_a_window_ahead_of_its_reader(sock_dir: str, arun: Run) -> None:
    address = os.path.join(sock_dir, "w0.sock")
    service = Counting(framing.STREAM_WINDOW * 4)

    async def main() -> None:
        async with serving(address, service):
            conn = await UnixTransport().connect(address, timeout=5)
            chunks = conn.stream(b"go", {})
            assert await anext(chunks) == b"0"
            await asyncio.sleep(0.2)  # a reader that stalls: the worker must stop, not fill memory
            # the generator may hold one chunk it has produced but could not send yet
            assert framing.FIRST_WINDOW <= service.produced <= framing.FIRST_WINDOW + 1
            # asking past the first window (the caller is done with it) opens the full one
            for i in range(1, framing.FIRST_WINDOW + 1):
                assert await anext(chunks) == b"%d" % i
            await asyncio.sleep(0.2)
            opened = framing.FIRST_WINDOW + framing.STREAM_WINDOW
            assert opened <= service.produced <= opened + 1
            rest = [chunk async for chunk in chunks]  # reading on grants credit until the end
            assert len(rest) == framing.STREAM_WINDOW * 4 - framing.FIRST_WINDOW - 1
            assert rest[-1] == b"%d" % (framing.STREAM_WINDOW * 4 - 1)
            await conn.close()

    arun(main())
