"""Contract suites every transport and object backend runs against itself.

Opt in from a plugin's tests::

    from anyserve.testing import TransportContract

    class TestUnixTransport(TransportContract):
        @pytest.fixture
        def transport(self):
            return UnixTransport()

Loading this module as a pytest plugin (``-p anyserve.testing`` or
``pytest_plugins = ["anyserve.testing"]``) also provides the
``plugin_manager`` fixture: a fresh manager with core's built-ins only,
never the environment's installed plugins.
"""

from __future__ import annotations

import pytest

from anyserve.plugins import PluginManager, create_plugin_manager
from anyserve.testing.objects import ObjectStoreContract
from anyserve.testing.transport import ContractService, TransportContract

__all__ = ["ContractService", "ObjectStoreContract", "TransportContract", "plugin_manager"]


@pytest.fixture
def plugin_manager() -> PluginManager:
    """Core's built-ins only; register test plugins on it as needed."""
    return create_plugin_manager(entrypoints=False, env={})
