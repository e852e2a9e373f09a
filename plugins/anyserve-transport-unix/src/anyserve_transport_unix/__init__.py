"""Two frame transports for anyserve: ``unix`` (agent <-> workers) and ``tcp`` (the router link).

Both speak one protocol, length-prefixed protobuf frames: ``unix`` over Unix
domain sockets between a replica's agent and its worker processes, ``tcp``
over TCP between the router and a replica's agent.

The plugin is registered through the ``anyserve`` entry-point group. The
package import stays light (every anyserve process imports the plugin
module at start-up); the transport classes load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyserve_transport_unix.version import __version__

if TYPE_CHECKING:
    from anyserve_transport_unix.transport import TcpTransport, UnixTransport

__all__ = ["TcpTransport", "UnixTransport", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("TcpTransport", "UnixTransport"):
        from anyserve_transport_unix import transport

        return getattr(transport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
