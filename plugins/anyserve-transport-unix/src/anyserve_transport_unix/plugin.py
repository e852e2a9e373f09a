"""Registers the ``unix`` transport with anyserve (entry point ``transport-unix``).

Importing this module stays cheap: the transport's modules load only when
configuration selects ``unix`` and core calls the factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyserve import hookimpl
from anyserve.errors import ConfigError
from anyserve.records import Options, TransportSpec

if TYPE_CHECKING:
    from anyserve_transport_unix.transport import UnixTransport

OPTIONS = ("max_frame_bytes",)


def create(options: Options) -> UnixTransport:
    """Build the transport from ``[transport.options]``, naming any bad option."""
    from anyserve_transport_unix.transport import UnixTransport

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown [transport.options] for unix: {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    try:
        return UnixTransport(**options)
    except ValueError as exc:
        raise ConfigError(f"[transport.options] for unix: {exc}") from exc


@hookimpl
def anyserve_register_transports(register):
    register(
        TransportSpec(
            name="unix",
            factory=create,
            description="workers in separate processes, framed protobuf over Unix domain sockets",
        )
    )
