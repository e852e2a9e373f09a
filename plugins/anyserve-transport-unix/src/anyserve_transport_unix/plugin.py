"""Registers the ``unix`` and ``tcp`` transports with anyserve (entry point ``transport-unix``).

Importing this module stays cheap: the transport's modules load only when
configuration selects one and core calls the factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyserve import hookimpl
from anyserve.errors import ConfigError
from anyserve.records import Options, TransportSpec

if TYPE_CHECKING:
    from anyserve_transport_unix.transport import TcpTransport, UnixTransport

OPTIONS = ("max_frame_bytes", "max_bytes_in_flight", "frame_timeout_seconds")
#: The tcp transport also takes TLS contexts, which core passes (from ``[tls]``), never a config file.
TCP_OPTIONS = (*OPTIONS, "ssl_server", "ssl_client")


def _options(name: str, options: Options, valid: tuple[str, ...] = OPTIONS) -> Options:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown options for transport {name}: {', '.join(unknown)}; valid: {', '.join(valid)}")
    return options


def create(options: Options) -> UnixTransport:
    """Build the ``unix`` transport from its options, naming any bad one."""
    from anyserve_transport_unix.transport import UnixTransport

    try:
        return UnixTransport(**_options("unix", options))
    except ValueError as exc:
        raise ConfigError(f"options for transport unix: {exc}") from exc


def create_tcp(options: Options) -> TcpTransport:
    """Build the ``tcp`` transport from its options, naming any bad one."""
    from anyserve_transport_unix.transport import TcpTransport

    try:
        return TcpTransport(**_options("tcp", options, TCP_OPTIONS))
    except ValueError as exc:
        raise ConfigError(f"options for transport tcp: {exc}") from exc


@hookimpl
def anyserve_register_transports(register):
    register(
        TransportSpec(
            name="unix",
            factory=create,
            description="workers in separate processes, framed protobuf over Unix domain sockets",
        )
    )
    register(
        TransportSpec(
            name="tcp",
            factory=create_tcp,
            description="the same frames over TCP; the default router -> replica link",
            network=True,
        )
    )
