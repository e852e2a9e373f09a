"""The plugin loads through the real hook path and validates its options."""

from __future__ import annotations

import os

import pytest

import anyserve_transport_unix.plugin
from anyserve.catalog import Catalog
from anyserve.errors import ConfigError
from anyserve.plugins import create_plugin_manager
from anyserve_transport_unix import UnixTransport


def test_registered_through_the_hook() -> None:
    pm = create_plugin_manager(entrypoints=False, plugins=(anyserve_transport_unix.plugin,), env={})
    registry = Catalog(pm).registries["transport"]
    assert "unix" in registry.names()
    transport = registry.get("unix").factory({"max_frame_bytes": 4096})
    assert isinstance(transport, UnixTransport)
    assert transport.name == "unix"
    assert transport.max_frame_bytes == 4096


def test_installed_entry_point_loads() -> None:
    # The real path a replica takes: the `anyserve` entry-point group of the installed dist.
    pm = create_plugin_manager(env={"ANYSERVE_LOAD_PLUGINS": "transport-unix"})
    assert not [f for f in pm.failures if f.name == "transport-unix"]
    assert "unix" in Catalog(pm).registries["transport"].names()


def test_factory_defaults() -> None:
    transport = anyserve_transport_unix.plugin.create({})
    assert transport.max_frame_bytes == 256 * 1024 * 1024


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown.*bogus.*valid: max_frame_bytes"):
        anyserve_transport_unix.plugin.create({"bogus": 1})


@pytest.mark.parametrize("value", [0, 10, "big", True, 2**33])
def test_bad_max_frame_bytes(value: object) -> None:
    with pytest.raises(ConfigError, match="max_frame_bytes"):
        anyserve_transport_unix.plugin.create({"max_frame_bytes": value})


def test_address_is_a_socket_file_in_run_dir() -> None:
    assert UnixTransport().address("/tmp/run", "w3") == os.path.join("/tmp/run", "w3.sock")


def test_address_too_long_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"AF_UNIX allows at most \d+.*shorter run directory"):
        UnixTransport().address("/tmp/" + "d" * 120, "w0")
