"""Core's built-in transport and object backend pass the contract suites."""

import pytest

from anyserve.builtins.inproc import InprocTransport
from anyserve.builtins.memory import MemoryStore
from anyserve.testing import ObjectStoreContract, TransportContract


class TestInprocTransport(TransportContract):
    @pytest.fixture
    def transport(self):
        return InprocTransport()


class TestMemoryStore(ObjectStoreContract):
    @pytest.fixture
    def store(self):
        return MemoryStore()
