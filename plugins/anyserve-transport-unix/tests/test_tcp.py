"""The tcp transport: the same frames over TCP pass core's transport contract suite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from anyserve.errors import ConfigError, ResourceExhausted, Unauthenticated
from anyserve.testing import ContractService, TransportContract
from anyserve_transport_unix import TcpTransport, framing
from anyserve_transport_unix.frames_pb2 import Frame, Hello
from anyserve_transport_unix.transport import free_port, split_address


@contextlib.asynccontextmanager
async def serving(transport: TcpTransport, address: str, service: Any) -> AsyncIterator[None]:
    """``service`` served on ``address`` for the block, the server cancelled after it."""
    server = asyncio.create_task(transport.serve(address, service))
    try:
        yield
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


class TestTcpTransport(TransportContract):
    @pytest.fixture
    def transport(self) -> TcpTransport:
        return TcpTransport()


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:7000", ("127.0.0.1", 7000)), ("[::1]:80", ("::1", 80)), ("localhost:1", ("localhost", 1))],
)
def test_addresses_are_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:port", "127.0.0.1:70000", ":80", "h:1/x"])
def test_a_bad_address_is_named(address: str) -> None:
    with pytest.raises(ConfigError, match="tcp address"):
        split_address(address)


def test_an_oversize_frame_names_the_tcp_transport_whose_limit_it_broke(arun) -> None:
    transport = TcpTransport(max_frame_bytes=4096)
    address = f"127.0.0.1:{free_port()}"

    async def main() -> None:
        async with serving(transport, address, ContractService()):
            conn = await transport.connect(address, timeout=5)
            with pytest.raises(ResourceExhausted, match="the tcp transport's max_frame_bytes=4096"):
                await conn.infer(b"x" * 5000, {})
            assert await conn.infer(b"x", {}) == b"x|"
            await conn.close()

    arun(main())


class Guarded(ContractService):
    """A service that admits only callers whose hello carries ``token`` (as the router link does)."""

    def admit(self, hello: dict) -> None:
        if hello.get("token") != "s3cret":
            raise Unauthenticated("needs the token")


def test_a_service_admits_a_caller_on_its_hello_before_reading_anything_else(arun) -> None:
    transport = TcpTransport()
    address = f"127.0.0.1:{free_port()}"
    host, port = split_address(address)

    async def main() -> None:
        async with serving(transport, address, Guarded()):
            for hello in (None, {"token": "wrong"}):
                with pytest.raises(Unauthenticated, match="refused the connection: needs the token"):
                    await transport.connect(address, timeout=5, hello=hello)
            # A stranger announcing a 250 MB frame is cut off at the handshake's limit, nothing allocated.
            reader, writer = await asyncio.open_connection(host, port)
            writer.write((250 * 1024 * 1024).to_bytes(4, "big"))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) is not None  # closed (after an error frame)
            writer.close()
            conn = await transport.connect(address, timeout=5, hello={"token": "s3cret"})
            assert await conn.infer(b"x", {}) == b"x|"
            await conn.close()

    arun(main())


def test_request_bytes_in_flight_are_bounded_and_given_back(arun) -> None:
    """Past max_bytes_in_flight a request is refused at once (not run); finished requests free their share."""
    transport = TcpTransport(max_frame_bytes=4096, max_bytes_in_flight=4096)
    address = f"127.0.0.1:{free_port()}"
    sleeper = b"sleep:0.3:" + b"x" * 2500  # held for 0.3 s, about 2.6 KB of the 4 KB budget

    async def main() -> None:
        async with serving(transport, address, ContractService()):
            conn = await transport.connect(address, timeout=5)
            first = asyncio.create_task(conn.infer(sleeper, {}))
            await asyncio.sleep(0.1)
            with pytest.raises(ResourceExhausted, match="max_bytes_in_flight"):
                await conn.infer(sleeper, {})
            assert (await first).endswith(b"x|")  # the first one was never disturbed
            assert (await conn.infer(sleeper, {})).endswith(b"x|")  # its share given back
            await conn.close()

    arun(main())


def test_a_connection_stalled_inside_a_frame_is_closed(arun) -> None:
    transport = TcpTransport(frame_timeout_seconds=0.3)
    address = f"127.0.0.1:{free_port()}"
    host, port = split_address(address)

    async def main() -> None:
        async with serving(transport, address, ContractService()):
            await (await transport.connect(address, timeout=5)).close()  # serving
            reader, writer = await asyncio.open_connection(host, port)
            hello = Frame(hello=Hello(version=framing.PROTOCOL_VERSION, json="{}"))
            writer.write(framing.encode(hello) + framing.HEADER.pack(1000) + b"only ten b")
            await writer.drain()
            started = asyncio.get_running_loop().time()
            received = await asyncio.wait_for(reader.read(), 10)  # the server's hello, then closed
            took = asyncio.get_running_loop().time() - started
            assert b"no whole frame within 0.3s" in received and took < 5
            writer.close()
            conn = await transport.connect(address, timeout=5)  # the server serves on
            assert await conn.infer(b"x", {}) == b"x|"
            await conn.close()

    arun(main())


class Loaded(ContractService):
    """A service that reports a load with each answer, one more request queued per answer (as the link's agent does)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0

    def answer_load(self) -> str:
        self.answers += 1
        return f"{self.answers},0"


def test_each_answer_carries_the_load_its_service_reports_and_none_without(arun) -> None:
    transport = TcpTransport()
    address, plain = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

    async def main() -> None:
        async with serving(transport, address, Loaded()), serving(transport, plain, ContractService()):
            conn = await transport.connect(address, timeout=5)
            assert conn.answer_load == ""  # nothing answered yet
            assert await conn.infer(b"x", {}) == b"x|"
            assert conn.answer_load == "1,0"
            assert [chunk async for chunk in conn.stream(b"2", {})] == [b"0:2", b"1:2"]
            assert conn.answer_load == "2,0"  # a stream's end frame carries it
            other = await transport.connect(plain, timeout=5)
            assert await other.infer(b"x", {}) == b"x|"
            assert other.answer_load == ""  # a service without answer_load() sends none
            await conn.close()
            await other.close()

    arun(main())
