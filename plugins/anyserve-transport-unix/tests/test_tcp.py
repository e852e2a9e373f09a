"""The tcp transport: the same frames over TCP pass core's transport contract suite."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from anyserve.errors import ConfigError, ResourceExhausted
from anyserve.testing import ContractService, TransportContract
from anyserve_transport_unix import TcpTransport
from anyserve_transport_unix.transport import free_port, split_address


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
        server = asyncio.create_task(transport.serve(address, ContractService()))
        try:
            conn = await transport.connect(address, timeout=5)
            with pytest.raises(ResourceExhausted, match="the tcp transport's max_frame_bytes=4096"):
                await conn.infer(b"x" * 5000, {})
            assert await conn.infer(b"x", {}) == b"x|"
            await conn.close()
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server

    arun(main())
