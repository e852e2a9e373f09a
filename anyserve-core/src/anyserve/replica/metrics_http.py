"""The agent's ``GET /metrics``: a small HTTP/1.1 server in the agent's own event loop, bounded every way.

Why in the agent's loop rather than prometheus_client's WSGI app under a
threaded server: the exposition reads the agent's state (its workers,
worker classes, queued requests), which belongs to the loop; a thread
reading it while the loop changes it would need locks on the request
path. A scrape is one small request every few seconds, so a loop-native
server that reads one request head and answers once costs nothing while
idle and needs no thread.

Bounds: at most :data:`MAX_SCRAPES` connections are served at once (more
are answered 503 and closed); a request head must arrive whole within
:data:`READ_TIMEOUT` seconds and :data:`MAX_HEAD` bytes (else 408 or 431,
and closed); only ``GET /metrics`` is served (405, 404 otherwise), no
request body is read, and every answer closes its connection, so nothing
a caller sends is buffered beyond one head. Who may call: a holder of the
cluster or the admin token (``Authorization: Bearer``), anyone when
``[cluster] auth = "off"``; 401 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST

from anyserve.credentials import Credentials, from_bearer
from anyserve.replica.metrics import ReplicaMetrics

log = logging.getLogger("anyserve.replica.metrics")

PATH = "/metrics"
#: Scrapes served at once; more are refused (503), not queued.
MAX_SCRAPES = 4
#: Seconds a caller has to send its request head, and to take the answer.
READ_TIMEOUT = 5.0
#: Bytes of request head read at most (request line and headers).
MAX_HEAD = 8192

_REASONS = {
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    400: "Bad Request",
    503: "Service Unavailable",
}


def _answer(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


class MetricsServer:
    """Serves ``metrics`` on ``host:port`` (0: a free port) to callers holding ``credentials``' tokens."""

    def __init__(self, metrics: ReplicaMetrics, credentials: Credentials, host: str, port: int) -> None:
        self.metrics = metrics
        self.credentials = credentials
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._busy = 0

    async def start(self) -> int:
        """Listen; the bound port."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._busy >= MAX_SCRAPES:
            await self._send(writer, _answer(503, b"too many scrapes at once\n", extra="retry-after: 1\r\n"))
            return
        self._busy += 1
        try:
            await self._send(writer, await self._respond(reader))
        finally:
            self._busy -= 1

    async def _respond(self, reader: asyncio.StreamReader) -> bytes:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except TimeoutError:
            return _answer(408, b"request head not received in time\n")
        except asyncio.LimitOverrunError:
            return _answer(431, f"request head over {MAX_HEAD} bytes\n".encode())
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return _answer(400, b"malformed request line\n")
        method, target, _ = parts
        if method != "GET":
            return _answer(405, f"{PATH} takes GET\n".encode(), extra="allow: GET\r\n")
        if target.split("?", 1)[0] != PATH:
            return _answer(404, f"only {PATH} is served here\n".encode())
        token = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                token = from_bearer(value.strip())
        if not self.credentials.is_cluster(token):
            return _answer(
                401,
                b"GET /metrics needs the cluster or the admin token: 'Authorization: Bearer <token>'\n",
                extra='www-authenticate: Bearer realm="anyserve"\r\n',
            )
        return _answer(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            if data:
                writer.write(data)
                await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
