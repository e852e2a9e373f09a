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

import os
import tempfile

import pytest

from anyserve.plugins import PluginManager, create_plugin_manager
from anyserve.testing.objects import ObjectStoreContract
from anyserve.testing.transport import ContractService, TransportContract

__all__ = ["ContractService", "ObjectStoreContract", "TransportContract", "plugin_manager"]


@pytest.fixture
def plugin_manager() -> PluginManager:
    """Core's built-ins only; register test plugins on it as needed."""
    return create_plugin_manager(entrypoints=False, env={})


def pytest_configure(config: pytest.Config) -> None:
    """Tokens the tests' routers make go to a folder of the session's, never the user's own state directory."""
    if "ANYSERVE_STATE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="anyserve-test-state-")
        # both spellings of one place: in-process Settings() read $XDG_STATE_HOME, loaded settings the variable
        os.environ["XDG_STATE_HOME"] = folder
        os.environ["ANYSERVE_STATE_DIR"] = os.path.join(folder, "anyserve")
