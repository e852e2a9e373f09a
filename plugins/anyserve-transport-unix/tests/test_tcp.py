"""The tcp transport: the same frames over TCP pass core's transport contract suite."""

from __future__ import annotations

import pytest

from anyserve.errors import ConfigError
from anyserve.testing import TransportContract
from anyserve_transport_unix import TcpTransport
from anyserve_transport_unix.transport import split_address


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
