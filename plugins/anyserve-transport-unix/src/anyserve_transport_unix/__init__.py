"""anyserve's ``unix`` IPC transport: framed protobuf over Unix domain sockets.

The plugin is registered through the ``anyserve`` entry-point group. The
package import stays light (every anyserve process imports the plugin
module at start-up); :class:`UnixTransport` is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyserve_transport_unix.version import __version__

if TYPE_CHECKING:
    from anyserve_transport_unix.transport import UnixTransport

__all__ = ["UnixTransport", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "UnixTransport":
        from anyserve_transport_unix.transport import UnixTransport

        return UnixTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
