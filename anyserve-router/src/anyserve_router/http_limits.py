"""Bounds on what an HTTP client can make the router hold: connections, header bytes, time to send a request.

uvicorn closes idle keep-alive connections (``router.keep_alive_seconds``),
but with httptools it has no header size limit and no timeout on a request
that is being sent: a connection that sends half a header, or a body at a
byte a minute, stays open for ever, and enough of them exhaust the process's
file descriptors, after which every client, ``/health`` and the replicas'
heartbeats get resets. :class:`GuardedProtocol` is uvicorn's httptools
protocol plus:

- **Headers** over ``router.max_header_bytes``: 431 and close.
- **Header time**: a connection must finish a request's headers within
  ``router.header_timeout_seconds`` of connecting (or of the request's first
  byte, on a kept-alive connection): else 408 and close.
- **Body time**: a body may take ``router.body_timeout_seconds``, and longer
  only while it keeps arriving at ``router.body_min_bytes_per_second`` on
  average: else 408 and close. The clock stops while the router itself is
  not reading (uvicorn's flow control). After the response, an unread rest
  of the body is discarded for at most :data:`LINGER_SECONDS`: once it is
  all there the connection serves the next request (clients reuse it: the
  answer did not say it would close), else it is closed (so a 413 cannot
  keep a connection busy).
- **Connections** over ``router.max_connections``: a new connection takes
  the place of the one that has waited longest for a request (idle between
  requests, or still sending its headers); when every connection has a
  request in progress, the newcomer is answered 503 and closed. A replica's
  heartbeat or a ``/health`` probe, which sends its request at once, thus
  gets through even while idle connections hold every slot, and the fd
  limit is never reached (:func:`connection_limit` keeps a reserve).

uvicorn's ``limit_concurrency`` is not used: it accepts every connection and
answers 503 once the count is reached, to ``/health`` and heartbeats alike,
and does nothing about connections that never finish a request.

Timing costs no timer per request: each connection notes the coarse time
(:attr:`ConnectionGuard.now`) when it changes phase, and one sweep per tick
(a quarter of the shortest timeout, at most a second) closes those overdue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from anyserve.protocol import dumps

log = logging.getLogger("anyserve.router.http")

#: Seconds the unread rest of a body is discarded after the response, before the connection is closed.
LINGER_SECONDS = 2.0
#: File descriptors kept for everything but client connections (replica channels, links, engines, logs):
#: an eighth of the limit, at least this many, at most half.
MIN_RESERVE = 256
#: Largest connection count chosen automatically (each costs memory, whatever the fd limit allows).
MAX_AUTO_CONNECTIONS = 65_536

# A connection's phases.
WAITING = 0  # connected, or reading a request's headers
IDLE = 1  # kept alive between requests (uvicorn's keep-alive timer closes it)
BODY = 2  # headers read, body arriving
BUSY = 3  # request read, response under way


def connection_limit(configured: int, nofile: int | None = None) -> tuple[int, str | None]:
    """The connection cap to enforce, and a warning when ``configured`` had to be lowered.

    0 means automatic: the soft open-file limit less a reserve. A configured
    value above that is lowered to it: past it, accepting fails for everyone.
    """
    soft = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 1 << 20
    reserve = min(max(MIN_RESERVE, soft // 8), soft // 2)
    ceiling = max(1, soft - reserve)
    if configured == 0:
        return min(ceiling, MAX_AUTO_CONNECTIONS), None
    if configured > ceiling:
        return ceiling, (
            f"router.max_connections = {configured} is more than the open-file limit allows ({soft}, less {reserve} "
            f"kept for replicas, engines and logs); using {ceiling}. Raise the limit (ulimit -n) to allow more."
        )
    return configured, None


@dataclass(frozen=True)
class HttpLimits:
    """The ``router.*`` HTTP bounds, in the units the protocol uses."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    keep_alive: float = 5.0
    body_timeout: float = 60.0
    body_min_rate: int = 16 * 1024
    max_connections: int = 10_000

    @classmethod
    def of(cls, router: Any) -> tuple[HttpLimits, str | None]:
        """From ``settings.router``, with the warning :func:`connection_limit` may give."""
        connections, warning = connection_limit(router.max_connections)
        limits = cls(
            max_header_bytes=router.max_header_bytes,
            header_timeout=router.header_timeout_seconds,
            keep_alive=router.keep_alive_seconds,
            body_timeout=router.body_timeout_seconds,
            body_min_rate=router.body_min_bytes_per_second,
            max_connections=connections,
        )
        return limits, warning

    @property
    def tick(self) -> float:
        return min(1.0, max(0.02, min(self.header_timeout, self.body_timeout, LINGER_SECONDS) / 4))


#: The gRPC status name each refusal's body carries, as the router's other error bodies do.
_CODES = {408: "DEADLINE_EXCEEDED", 431: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}


def _answer(status: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    body = dumps({"error": message, "code": _CODES[status]})
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n"
        % (status, reason.encode(), len(body), extra)
    ) + body


class ConnectionGuard:
    """What all connections of one server share: the limits, the coarse clock, who waits, who sends a body."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.now = 0.0
        #: Connections waiting for a request (new, idle, or sending headers), longest-waiting first.
        self.waiting: dict[GuardedProtocol, None] = {}
        #: Connections whose request body is arriving.
        self.bodies: set[GuardedProtocol] = set()
        self.task: asyncio.Task[None] | None = None
        #: Counts of what was refused or closed, for tests and diagnosis.
        self.counts: dict[str, int] = {}
        self.refuse_busy = _answer(
            503,
            "Service Unavailable",
            "the router has as many connections as router.max_connections allows; retry shortly",
            b"retry-after: 1\r\n",
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.task is None:
            self.now = loop.time()
            self.task = loop.create_task(self._sweep(loop), name="anyserve-http-guard")

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        tick = self.limits.tick
        while True:
            await asyncio.sleep(tick)
            self.now = loop.time()
            try:
                self._close_overdue()
            except Exception:  # the sweep must outlive any one connection's failure
                log.exception("HTTP connection sweep failed")

    def _close_overdue(self) -> None:
        limits, now = self.limits, self.now
        for conn in list(self.waiting):
            if conn._phase == WAITING and now - conn._since > limits.header_timeout:
                message = (
                    f"request headers not received within {limits.header_timeout:g}s (router.header_timeout_seconds)"
                )
                # A connection that sent nothing is closed without a word: there is no request to answer.
                conn.refuse(408 if conn._header_bytes else 0, "Request Timeout", message, "slow headers")
        for conn in list(self.bodies):
            conn.check_body(now)

    def evict_for_newcomer(self) -> bool:
        """Close the connection that has waited longest for a request; ``False`` when none is waiting."""
        if not self.waiting:
            return False
        conn = next(iter(self.waiting))
        self.waiting.pop(conn)
        conn.refuse(0, "", "", "evicted")
        return True


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds in the module docstring; made by :func:`protocol_class`."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = WAITING
        self._since = 0.0
        self._header_bytes = 0
        self._body_bytes = 0
        self._lingering = False
        self._refused = False

    # -- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        full = len(self.connections) >= guard.limits.max_connections
        super().connection_made(transport)
        guard.start(self.loop)
        self._since = guard.now
        if full and not guard.evict_for_newcomer():
            guard.count("refused")
            self._refused = True
            transport.write(guard.refuse_busy)
            transport.close()
            return
        guard.waiting[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.waiting.pop(self, None)
        self.guard.bodies.discard(self)
        super().connection_lost(exc)

    def refuse(self, status: int, reason: str, message: str, what: str) -> None:
        """Answer ``status`` (0: nothing) unless a response is under way, and close: the client is past a bound."""
        self.guard.waiting.pop(self, None)
        self.guard.bodies.discard(self)
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.guard.count(what)
        cycle = self.cycle
        in_progress = cycle is not None and cycle.response_started and not cycle.response_complete
        if status and not in_progress:
            self.transport.write(_answer(status, reason, message))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() answers http.disconnect
            cycle.message_event.set()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._phase == BODY:
            self._body_bytes += len(data)
        else:
            self._header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused:
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._header_bytes > self.guard.limits.max_header_bytes and self._phase != BODY:
            self._too_large_headers()

    def _too_large_headers(self) -> None:
        limit = self.guard.limits.max_header_bytes
        self.refuse(
            431,
            "Request Header Fields Too Large",
            f"request line and headers exceed {limit} bytes (router.max_header_bytes)",
            "large headers",
        )

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._phase == IDLE:  # a kept-alive connection's next request: its headers' clock starts now
            self._phase = WAITING
            self._since = self.guard.now
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        guard = self.guard
        if self._header_bytes > guard.limits.max_header_bytes:
            # What arrived with the headers may include the body: measure the headers themselves.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > guard.limits.max_header_bytes:
                self._too_large_headers()
                raise _Refused
        self._header_bytes = 0
        self._body_bytes = 0
        self._phase = BODY
        self._since = guard.now
        guard.waiting.pop(self, None)
        guard.bodies.add(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = BUSY
        self.guard.bodies.discard(self)
        super().on_message_complete()
        if self._lingering:
            # The rest of a body answered early has arrived: the request is over, and the connection is
            # clean for the next one (a client may reuse it: the answer did not say it would close).
            self._lingering = False
            if not self.pipeline:
                self._phase = IDLE
                self._since = self.guard.now
                self.guard.waiting.pop(self, None)
                self.guard.waiting[self] = None

    def on_response_complete(self) -> None:
        guard = self.guard
        if self._phase == BODY:
            # Answered before the body was read (413, 503, 404...): discard the rest, for a short while only.
            self._lingering = True
            self._since = guard.now
        elif not self.pipeline:
            self._phase = IDLE
            self._since = guard.now
            guard.waiting.pop(self, None)
            guard.waiting[self] = None
        super().on_response_complete()

    def check_body(self, now: float) -> None:
        """Close the connection if its body is overdue (called by the sweep)."""
        limits = self.guard.limits
        elapsed = now - self._since
        if self._lingering:
            if elapsed > LINGER_SECONDS:
                self.refuse(0, "", "", "lingering body")
            return
        if self.flow.read_paused:  # the router is not reading: not the client's delay
            self._since += self.guard.limits.tick
            return
        if elapsed > limits.body_timeout + self._body_bytes / limits.body_min_rate:
            self.refuse(
                408,
                "Request Timeout",
                f"request body not received in time: {self._body_bytes} bytes in {elapsed:.0f}s (router."
                f"body_timeout_seconds {limits.body_timeout:g}, then router.body_min_bytes_per_second "
                f"{limits.body_min_rate})",
                "slow body",
            )


class _Refused(Exception):
    """Stops the parser once a request was refused from inside a parser callback."""


def protocol_class(limits: HttpLimits) -> tuple[type[GuardedProtocol], ConnectionGuard]:
    """A protocol class for uvicorn's ``http=`` bound to a fresh :class:`ConnectionGuard` over ``limits``."""
    guard = ConnectionGuard(limits)
    return type("RouterHttpProtocol", (GuardedProtocol,), {"guard": guard}), guard


async def stop(guard: ConnectionGuard) -> None:
    if guard.task is not None:
        guard.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await guard.task
