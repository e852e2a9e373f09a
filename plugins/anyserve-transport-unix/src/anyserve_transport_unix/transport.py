"""The ``unix`` and ``tcp`` transports: the same frames over two kinds of socket.

``unix`` is the agent <-> worker IPC: workers are separate processes, so a
crashing handler takes down only its worker; the agent sees the socket close
and fails that worker's in-flight requests with ``Unavailable``. ``tcp``
carries the same frames between hosts; its main use is the router -> replica
link (``[link] name = "tcp"``), where it replaces a gRPC hop. See the README
for the frame format.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from anyserve.errors import ConfigError
from anyserve.transport import WorkerService
from anyserve_transport_unix import client, framing, server
from anyserve_transport_unix.bounds import DEFAULT_FRAME_TIMEOUT_S, Bounds

# AF_UNIX sun_path holds 108 bytes on Linux (104 on the BSDs/macOS), NUL included.
MAX_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
# asyncio StreamReader limit: reading pauses only past twice this much
# buffered data, so big frames arrive in few pause/resume cycles.
STREAM_LIMIT = 4 * 1024 * 1024


def check_path(path: str) -> str:
    """Fail early and clearly: bind() would only say 'AF_UNIX path too long'."""
    size = len(os.fsencode(path))
    if size > MAX_PATH_BYTES:
        raise ConfigError(
            f"unix socket path {path!r} is {size} bytes; AF_UNIX allows at most {MAX_PATH_BYTES}. "
            f"Use a shorter run directory (for example under /tmp)."
        )
    return path


class _FrameTransport:
    """What both transports share: the frame size limit."""

    name = ""

    def __init__(
        self,
        *,
        max_frame_bytes: int = framing.DEFAULT_MAX_FRAME_BYTES,
        max_bytes_in_flight: int | None = None,
        frame_timeout_seconds: float = DEFAULT_FRAME_TIMEOUT_S,
    ) -> None:
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int):
            raise ValueError(f"max_frame_bytes must be an integer, got {max_frame_bytes!r}")
        if not 1024 <= max_frame_bytes <= framing.MAX_FRAME_LIMIT:
            raise ValueError(
                f"max_frame_bytes must be between 1024 and {framing.MAX_FRAME_LIMIT}, got {max_frame_bytes}"
            )
        in_flight = 2 * max_frame_bytes if max_bytes_in_flight is None else max_bytes_in_flight
        if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < max_frame_bytes:
            raise ValueError(f"max_bytes_in_flight must be an integer of at least max_frame_bytes, got {in_flight!r}")
        if isinstance(frame_timeout_seconds, bool) or not isinstance(frame_timeout_seconds, (int, float)):
            raise ValueError(f"frame_timeout_seconds must be a number, got {frame_timeout_seconds!r}")
        if not 0 < frame_timeout_seconds < float("inf"):
            raise ValueError(f"frame_timeout_seconds must be positive, got {frame_timeout_seconds!r}")
        self.max_frame_bytes = max_frame_bytes
        #: Request bytes the served side holds at once, and how long a begun frame may take (see bounds.py).
        self.max_bytes_in_flight = in_flight
        self.frame_timeout = float(frame_timeout_seconds)

    def bounds(self) -> Bounds:
        """Fresh bounds for one server."""
        return Bounds(self.max_bytes_in_flight, self.frame_timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_frame_bytes={self.max_frame_bytes})"


class UnixTransport(_FrameTransport):
    """Creates worker sockets and agent connections; see :class:`anyserve.transport.Transport`."""

    name = "unix"

    def address(self, run_dir: str, worker_id: str) -> str:
        return check_path(os.path.join(run_dir, f"{worker_id}.sock"))

    async def serve(self, address: str, service: WorkerService) -> None:
        await server.serve(
            check_path(address),
            service,
            max_frame_bytes=self.max_frame_bytes,
            stream_limit=STREAM_LIMIT,
            bounds=self.bounds(),
        )

    async def connect(
        self, address: str, *, timeout: float = 10.0, hello: Mapping[str, Any] | None = None
    ) -> client.FrameConnection:
        return await client.connect(
            check_path(address),
            timeout=timeout,
            max_frame_bytes=self.max_frame_bytes,
            stream_limit=STREAM_LIMIT,
            hello=hello,
        )


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port), with an error naming what is wrong."""
    try:
        parts = urlsplit(f"//{address}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"tcp address {address!r}: {exc}") from None
    if not host or port is None or parts.path or parts.username:
        raise ConfigError(f"tcp address {address!r} is not host:port (e.g. 127.0.0.1:7000)")
    return host, port


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class TcpTransport(_FrameTransport):
    """The frames over TCP: ``host:port`` addresses; see :class:`anyserve.transport.Transport`.

    ``ssl_server`` and ``ssl_client`` (``ssl.SSLContext``) put the frames in
    TLS: core passes them when ``[tls]`` is configured.
    """

    name = "tcp"

    def __init__(
        self,
        *,
        max_frame_bytes: int = framing.DEFAULT_MAX_FRAME_BYTES,
        max_bytes_in_flight: int | None = None,
        frame_timeout_seconds: float = DEFAULT_FRAME_TIMEOUT_S,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            max_frame_bytes=max_frame_bytes,
            max_bytes_in_flight=max_bytes_in_flight,
            frame_timeout_seconds=frame_timeout_seconds,
        )
        for name, value in (("ssl_server", ssl_server), ("ssl_client", ssl_client)):
            if value is not None and not isinstance(value, ssl.SSLContext):
                raise ValueError(f"{name} must be an ssl.SSLContext, got {type(value).__name__}")
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client

    def address(self, run_dir: str, worker_id: str) -> str:
        return f"127.0.0.1:{free_port()}"

    async def serve(self, address: str, service: WorkerService) -> None:
        host, port = split_address(address)
        await server.serve_tcp(
            host,
            port,
            service,
            max_frame_bytes=self.max_frame_bytes,
            stream_limit=STREAM_LIMIT,
            ssl=self.ssl_server,
            bounds=self.bounds(),
        )

    async def connect(
        self, address: str, *, timeout: float = 10.0, hello: Mapping[str, Any] | None = None
    ) -> client.FrameConnection:
        host, port = split_address(address)
        return await client.connect_tcp(
            host,
            port,
            timeout=timeout,
            max_frame_bytes=self.max_frame_bytes,
            stream_limit=STREAM_LIMIT,
            hello=hello,
            ssl=self.ssl_client,
        )
