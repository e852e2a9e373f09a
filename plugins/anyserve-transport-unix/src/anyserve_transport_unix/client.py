"""Client side: one multiplexed frame connection, the same for both transports.

Over ``unix`` it is the agent's connection to one worker; over ``tcp`` the
router's connection to one replica's agent (the router link).

Requests get ids from a counter; a single reader task routes each answer
frame to the waiting future (unary) or queue (stream) of its id. Whatever
ends the connection — the peer dying, a protocol error, ``close()`` —
fails every request still waiting with ``Unavailable``, so no caller hangs
on a peer that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from anyserve.errors import AnyServeError, ResourceExhausted, Unavailable, error_for_code
from anyserve.transport import Query
from anyserve_transport_unix import framing
from anyserve_transport_unix.frames_pb2 import Cancel, Credit, Error, Frame, Hello

log = logging.getLogger(__name__)

_END = object()  # queued after a stream's last chunk
_Target = asyncio.Future[bytes] | asyncio.Queue[Any]


class _PeerClosed(Exception):
    """The peer announced (with an id-0 Error frame) that it is closing the connection."""


class FrameConnection:
    """One connection speaking the frame protocol, over a Unix socket or TCP.

    The agent's handle on one worker (``unix``) or the router's on one
    replica's link (``tcp``); see :class:`anyserve.transport.Connection`.
    """

    def __init__(
        self,
        address: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: dict[str, Any],
        max_frame_bytes: int,
        transport: str = "unix",
    ) -> None:
        self.address = address
        self.transport = transport  # named in errors, so a limit is looked up under the right transport
        self.hello = hello
        self._reader = reader
        self._writer = writer
        framing.enlarge_socket_buffers(writer)
        self._out = framing.FrameWriter(writer)
        self._max_frame_bytes = max_frame_bytes
        self._ids = itertools.count(1)
        self._pending: dict[int, _Target] = {}
        self._failure: str | None = None
        #: The load the serving side put on its latest answer (``queued,in_flight``; empty: none yet).
        self.answer_load = ""
        #: This connection's loop, kept: asking for the running loop per request costs a system call on Python
        #: 3.11 (its fork check calls getpid()).
        self._loop = asyncio.get_running_loop()
        self._read_task = self._loop.create_task(self._read_loop(), name=f"anyserve-unix-reader:{address}")

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._failure is not None

    @property
    def _who(self) -> str:
        return f"worker {self.hello.get('pid', '?')} at {self.address}"

    # -- requests ------------------------------------------------------------

    async def infer(self, payload: bytes, query: Query) -> bytes:
        request_id, buffers = self._prepare(payload, query, stream=False)
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[request_id] = future
        try:
            await self._write(buffers)
            return await future
        finally:
            self._abandon(request_id)

    async def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        request_id, buffers = self._prepare(payload, query, stream=True)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[request_id] = queue
        consumed = 0
        # The first credit opens the window from FIRST_WINDOW to STREAM_WINDOW; later ones keep it there.
        credit_at, grant = framing.FIRST_WINDOW, framing.STREAM_WINDOW
        try:
            await self._write(buffers)
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
                consumed += 1
                if consumed == credit_at:  # the caller is done with them: the worker may send more
                    consumed = 0
                    credit = Frame(id=request_id, credit=Credit(chunks=grant))
                    credit_at = grant = framing.STREAM_CREDIT
                    self._send_now([framing.encode(credit)])
        finally:
            self._abandon(request_id)

    def _prepare(self, payload: bytes, query: Query, *, stream: bool) -> tuple[int, list[bytes | memoryview]]:
        """Check the connection and the size limit; a new request id and its encoded frame."""
        if self._failure is not None:
            raise Unavailable(self._failure)
        request_id = next(self._ids)
        window = framing.FIRST_WINDOW if stream else 0
        buffers = framing.encode_payload(request_id, framing.REQUEST, payload, query, stream, window)
        size = framing.frame_size(buffers)
        if size > self._max_frame_bytes:
            raise ResourceExhausted(
                f"request frame of {size} bytes exceeds the {self.transport} transport's "
                f"max_frame_bytes={self._max_frame_bytes}"
            )
        return request_id, buffers

    def _abandon(self, request_id: int) -> None:
        """Forget a request; if it was still unanswered, tell the worker to cancel it."""
        if self._pending.pop(request_id, None) is not None:
            self._send_now([framing.encode(Frame(id=request_id, cancel=Cancel()))])

    async def _write(self, buffers: list[bytes | memoryview]) -> None:
        # A lost connection needs no handling here: the reader task sees it
        # too and fails the request's future or queue with the reason.
        with contextlib.suppress(ConnectionError):
            await self._out.write(buffers)

    def _send_now(self, buffers: Sequence[bytes | memoryview]) -> None:
        if self._failure is None:
            self._out.send(buffers)

    # -- answers -------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = f"{self._who} went away"
        try:
            while (frame := await framing.read(self._reader, self._max_frame_bytes)) is not None:
                self._deliver(frame)
        except _PeerClosed as exc:
            reason = f"{self._who} closed the connection: {exc}"
        except framing.ProtocolError as exc:
            reason = f"{self._who} broke the wire protocol: {exc}"
            log.warning("%s", reason)
            code = "RESOURCE_EXHAUSTED" if isinstance(exc, framing.FrameTooLarge) else "INTERNAL"
            self._send_now([framing.encode(Frame(error=Error(code=code, message=f"agent: {exc}")))])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._shut(reason)

    def _deliver(self, frame: Frame) -> None:
        kind = frame.WhichOneof("kind")
        if frame.id == 0:
            if kind == "error":
                raise _PeerClosed(frame.error.message)
            raise framing.ProtocolError(f"unexpected connection-level {kind or 'empty'} frame")
        target = self._pending.get(frame.id)
        if target is None:
            return  # answer to a request the caller already abandoned
        streaming = isinstance(target, asyncio.Queue)
        if kind == "chunk" and streaming:
            target.put_nowait(frame.chunk.payload)
        elif kind == "end" and streaming:
            del self._pending[frame.id]
            if frame.end.load:
                self.answer_load = frame.end.load
            target.put_nowait(_END)
        elif kind == "response" and not streaming:
            del self._pending[frame.id]
            if frame.response.load:
                self.answer_load = frame.response.load
            if not target.done():
                target.set_result(frame.response.payload)
        elif kind == "error":
            del self._pending[frame.id]
            self._fail(target, error_for_code(frame.error.code, frame.error.message))
        else:
            raise framing.ProtocolError(f"unexpected {kind or 'empty'} frame for request {frame.id}")

    @staticmethod
    def _fail(target: _Target, error: AnyServeError) -> None:
        if isinstance(target, asyncio.Queue):
            target.put_nowait(error)
        elif not target.done():
            target.set_exception(error)

    def _shut(self, reason: str) -> None:
        """Mark the connection dead and fail everything still waiting."""
        if self._failure is None:
            self._failure = reason
        pending, self._pending = self._pending, {}
        for target in pending.values():
            self._fail(target, Unavailable(self._failure))
        self._out.close()

    async def close(self) -> None:
        self._shut(f"connection to {self._who} was closed")
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _open(
    address: str, open_stream: Opener, deadline: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the connection, retrying while the socket does not exist yet or nobody listens."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await open_stream()
        except (FileNotFoundError, ConnectionRefusedError, BlockingIOError) as exc:
            last = exc
        except OSError as exc:  # permissions, bad path, unknown host: waiting will not help
            raise Unavailable(f"cannot connect to {address}: {exc}") from exc
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Unavailable(f"nothing is serving {address} (last error: {last})")
        await asyncio.sleep(min(0.02, remaining))


async def connect(
    address: str, *, timeout: float, max_frame_bytes: int, stream_limit: int, hello: Mapping[str, Any] | None = None
) -> FrameConnection:
    """Connect to a Unix socket and complete the handshake within ``timeout`` seconds."""
    return await handshake(
        address,
        lambda: asyncio.open_unix_connection(address, limit=stream_limit),
        timeout,
        max_frame_bytes,
        hello=hello,
    )


async def connect_tcp(
    host: str,
    port: int,
    *,
    timeout: float,
    max_frame_bytes: int,
    stream_limit: int,
    hello: Mapping[str, Any] | None = None,
    ssl: ssl_module.SSLContext | None = None,
) -> FrameConnection:
    """Connect to a TCP ``host:port`` (in TLS with ``ssl``) and complete the handshake within ``timeout`` seconds."""
    return await handshake(
        f"{host}:{port}",
        lambda: asyncio.open_connection(host, port, limit=stream_limit, ssl=ssl),
        timeout,
        max_frame_bytes,
        transport="tcp",
        hello=hello,
    )


async def handshake(
    address: str,
    open_stream: Opener,
    timeout: float,
    max_frame_bytes: int,
    *,
    transport: str = "unix",
    hello: Mapping[str, Any] | None = None,
) -> FrameConnection:
    """Open with ``open_stream`` (retried until ``timeout``), send our hello and read the peer's.

    The peer admits us (or not) on our hello before it says anything: a
    refusal is an error frame instead of its hello, raised here.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reader, writer = await _open(address, open_stream, deadline)
    try:
        # A peer that just started listening gets a short grace for its hello.
        wait = max(deadline - loop.time(), 0.5)
        mine = Frame(hello=Hello(version=framing.PROTOCOL_VERSION, json=json.dumps(dict(hello or {}))))
        writer.write(framing.encode(mine))
        frame = await asyncio.wait_for(framing.read(reader, max_frame_bytes), wait)
        peer = _check_hello(address, frame)
    except TimeoutError as exc:
        writer.close()
        raise Unavailable(f"{address} accepted the connection but sent no hello") from exc
    except (ConnectionError, asyncio.IncompleteReadError, framing.ProtocolError) as exc:
        writer.close()
        raise Unavailable(f"handshake with {address} failed: {exc}") from exc
    except BaseException:
        writer.close()
        raise
    return FrameConnection(address, reader, writer, peer, max_frame_bytes, transport)


def _check_hello(address: str, frame: Frame | None) -> dict[str, Any]:
    if frame is None:
        raise Unavailable(f"worker at {address} closed the connection during the handshake")
    kind = frame.WhichOneof("kind")
    if kind == "error":
        message = f"{address} refused the connection: {frame.error.message}"
        if frame.error.code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise error_for_code(frame.error.code, message)
        raise Unavailable(message)
    if kind != "hello":
        raise Unavailable(f"worker at {address} sent {kind or 'an empty'} frame instead of hello")
    if frame.hello.version != framing.PROTOCOL_VERSION:
        raise Unavailable(
            f"worker at {address} speaks unix transport protocol {frame.hello.version}, "
            f"this agent speaks {framing.PROTOCOL_VERSION}; upgrade anyserve-transport-unix on both sides"
        )
    try:
        hello = json.loads(frame.hello.json)
    except ValueError as exc:
        raise Unavailable(f"worker at {address} sent an unreadable hello: {exc}") from exc
    if not isinstance(hello, dict):
        raise Unavailable(f"worker at {address} sent a hello that is not a JSON object")
    return hello
