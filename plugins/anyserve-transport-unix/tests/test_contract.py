"""The unix transport passes core's transport contract suite."""

from __future__ import annotations

import pytest

from anyserve.testing import TransportContract
from anyserve_transport_unix import UnixTransport


class TestUnixTransport(TransportContract):
    @pytest.fixture
    def transport(self) -> UnixTransport:
        return UnixTransport()
