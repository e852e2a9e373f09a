"""The ``unix`` transport: agent and workers talk over Unix domain sockets.

Workers are separate processes, so a crashing handler takes down only its
worker; the agent sees the socket close and fails that worker's in-flight
requests with ``Unavailable``. See the README for the frame format.
"""

from __future__ import annotations

import os
import sys

from anyserve.errors import ConfigError
from anyserve.transport import WorkerService
from anyserve_transport_unix import client, framing, server

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


class UnixTransport:
    """Creates worker sockets and agent connections; see :class:`anyserve.transport.Transport`."""

    name = "unix"

    def __init__(self, *, max_frame_bytes: int = framing.DEFAULT_MAX_FRAME_BYTES) -> None:
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int):
            raise ValueError(f"max_frame_bytes must be an integer, got {max_frame_bytes!r}")
        if not 1024 <= max_frame_bytes <= framing.MAX_FRAME_LIMIT:
            raise ValueError(
                f"max_frame_bytes must be between 1024 and {framing.MAX_FRAME_LIMIT}, got {max_frame_bytes}"
            )
        self.max_frame_bytes = max_frame_bytes

    def __repr__(self) -> str:
        return f"UnixTransport(max_frame_bytes={self.max_frame_bytes})"

    def address(self, run_dir: str, worker_id: str) -> str:
        return check_path(os.path.join(run_dir, f"{worker_id}.sock"))

    async def serve(self, address: str, service: WorkerService) -> None:
        await server.serve(
            check_path(address), service, max_frame_bytes=self.max_frame_bytes, stream_limit=STREAM_LIMIT
        )

    async def connect(self, address: str, *, timeout: float = 10.0) -> client.UnixConnection:
        return await client.connect(
            check_path(address), timeout=timeout, max_frame_bytes=self.max_frame_bytes, stream_limit=STREAM_LIMIT
        )
