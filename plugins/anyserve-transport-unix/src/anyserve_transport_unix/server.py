"""Server side: serve a :class:`WorkerService` on a Unix socket or a TCP port.

The served side is a worker (``unix``) or a replica's agent on the router
link (``tcp``); each connection to it (from the agent, or from the router)
is a :class:`Session`. The session reads frames and starts one task per
request, so a slow handler never holds up the others on the same
connection; a ``Cancel`` frame cancels that task. When the connecting side
goes away the session cancels everything it started, because nobody is left
to read the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl as ssl_module
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from anyserve.errors import AnyServeError, ResourceExhausted, Unavailable, as_anyserve_error
from anyserve.transport import WorkerService
from anyserve_transport_unix import framing
from anyserve_transport_unix.bounds import Bounds
from anyserve_transport_unix.frames_pb2 import End, Error, Frame, Hello, Request

log = logging.getLogger(__name__)

SOCKET_MODE = 0o600
# How long a closing session waits for cancelled handlers that are slow to stop.
_CANCEL_GRACE_S = 5.0


class Session:
    """One connection on the served side: the agent's to a worker, or the router's to a replica's link."""

    def __init__(
        self,
        service: WorkerService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int,
        transport: str = "unix",
        bounds: Bounds | None = None,
    ) -> None:
        self.service = service
        #: The service's optional ``answer_load()``: its load, sent with each answer (the router link's agent has it).
        self._load_of = getattr(service, "answer_load", None)
        #: Shared with the server's other sessions: request bytes in flight, stalled frames.
        self.bounds = bounds or Bounds(max_bytes_in_flight=2 * max_frame_bytes)
        #: Payload bytes each running request holds against ``bounds``.
        self.sizes: dict[int, int] = {}
        self.transport = transport
        self.reader = reader
        self.writer = writer
        framing.enlarge_socket_buffers(writer)
        self.out = framing.FrameWriter(writer)
        self.max_frame_bytes = max_frame_bytes
        self.tasks: dict[int, asyncio.Task[None]] = {}
        #: The connection's loop, kept: asking for the running loop per frame costs a system call on Python 3.11
        #: (its fork check calls getpid()).
        self.loop = asyncio.get_running_loop()
        #: Credit of the streams that have a window (see ``Request.window``).
        self.windows: dict[int, framing.Window] = {}

    async def run(self) -> None:
        """Handshake, then serve frames until the agent leaves or the task is cancelled."""
        try:
            refusal = await self._admit()
            if refusal is not None:
                self.out.send([framing.encode(refusal)])
                return
            self.out.send([framing.encode(self._hello())])
            while (read := await self._read()) is not None:
                self._dispatch(*read)
        except framing.ProtocolError as exc:
            # The caller's bytes were wrong (too big, undecodable, out of order): its fault, not ours.
            log.warning("closing a %s connection: %s", self.transport, exc)
            code = "RESOURCE_EXHAUSTED" if isinstance(exc, framing.FrameTooLarge) else "INVALID_ARGUMENT"
            self.out.send([framing.encode(Frame(error=Error(code=code, message=f"{self._side}: {exc}")))])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the agent went away mid-frame; same as a clean end
        finally:
            await self._stop_all()
            self.out.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _read(self) -> tuple[Frame, int] | None:
        """The next frame and its size; None at a clean end between frames (see :func:`framing.read`).

        While its body is on the way the session is listed as partial, so the
        server's sweep can close it if the body stalls.
        """
        try:
            header = await self.reader.readexactly(framing.HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise
        (size,) = framing.HEADER.unpack(header)
        if size > self.max_frame_bytes:
            raise framing.FrameTooLarge(size, self.max_frame_bytes)
        partial = self.bounds.partial
        partial[self] = self.loop.time()
        try:
            body = await self.reader.readexactly(size)
        finally:
            partial.pop(self, None)
        return framing.decode(body), size

    def abort(self, reason: str) -> None:
        """Close the connection now (the sweep found it stalled inside a frame)."""
        self.out.send([framing.encode(Frame(error=Error(code="DEADLINE_EXCEEDED", message=f"{self._side}: {reason}")))])
        self.writer.transport.abort()

    async def _admit(self) -> Frame | None:
        """Read the connecting side's hello and let the service admit it; the error frame refusing it, or None.

        Nothing else is read first, and that hello is small and must come soon:
        a stranger on the link port can hold neither memory nor a connection.
        """
        try:
            frame = await asyncio.wait_for(
                framing.read(self.reader, framing.HANDSHAKE_MAX_BYTES), framing.HANDSHAKE_TIMEOUT_S
            )
        except framing.FrameTooLarge as exc:
            message = f"a hello is at most {framing.HANDSHAKE_MAX_BYTES} bytes, this one announced {exc.size}"
            return Frame(error=Error(code="RESOURCE_EXHAUSTED", message=message))
        except TimeoutError:
            return Frame(error=Error(code="DEADLINE_EXCEEDED", message="no hello within the handshake timeout"))
        if frame is None or frame.WhichOneof("kind") != "hello":
            return Frame(error=Error(code="INVALID_ARGUMENT", message="the first frame must be a hello"))
        if frame.hello.version != framing.PROTOCOL_VERSION:
            return Frame(error=Error(code="FAILED_PRECONDITION", message=(
                f"this side speaks frame protocol {framing.PROTOCOL_VERSION}, the caller {frame.hello.version}; "
                "upgrade anyserve-transport-unix on both sides")))  # fmt: skip
        admit = getattr(self.service, "admit", None)
        if admit is None:
            return None
        try:
            hello = json.loads(frame.hello.json or "{}")
            admit(hello if isinstance(hello, dict) else {})
        except ValueError:
            return Frame(error=Error(code="INVALID_ARGUMENT", message="the hello is not JSON"))
        except AnyServeError as exc:
            log.warning("refused a %s connection: %s", self.transport, exc.message)
            return Frame(error=Error(code=exc.code, message=exc.message))
        return None

    @property
    def _side(self) -> str:
        """Who is speaking, for error messages: a worker (unix), or a replica's router link (tcp)."""
        return "worker" if self.transport == "unix" else "router link"

    def _hello(self) -> Frame:
        """The handshake frame; a broken ``hello()`` is reported to the agent, not just logged here."""
        try:
            return Frame(hello=Hello(version=framing.PROTOCOL_VERSION, json=json.dumps(self.service.hello())))
        except Exception as exc:
            log.exception("WorkerService.hello() failed")
            return Frame(error=Error(code="INTERNAL", message=f"worker: hello() failed: {type(exc).__name__}: {exc}"))

    def _dispatch(self, frame: Frame, size: int = 0) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "request":
            if frame.id == 0 or frame.id in self.tasks:
                raise framing.ProtocolError(f"request id {frame.id} is zero or already in use")
            if not self.bounds.take(size):
                message = (
                    f"{self._side}: {self.bounds.used} bytes of requests are in flight already, the limit is "
                    f"{self.bounds.max_bytes_in_flight} (max_bytes_in_flight); retry"
                )
                self.out.send(
                    [framing.encode(Frame(id=frame.id, error=Error(code="RESOURCE_EXHAUSTED", message=message)))]
                )
                return
            self.sizes[frame.id] = size
            task = self.loop.create_task(self._serve(frame.id, frame.request))
            self.tasks[frame.id] = task
            task.add_done_callback(lambda t, rid=frame.id: self._forget(rid, t))
        elif kind == "cancel":
            task = self.tasks.get(frame.id)
            if task is not None:  # else it finished already; its answer is on its way
                task.cancel()
        elif kind == "credit":
            window = self.windows.get(frame.id)
            if window is not None:  # else the stream ended already
                window.grant(frame.credit.chunks)
        else:
            raise framing.ProtocolError(f"unexpected {kind or 'empty'} frame from the agent")

    def _forget(self, request_id: int, task: asyncio.Task[None]) -> None:
        if self.tasks.get(request_id) is task:
            del self.tasks[request_id]
            self.windows.pop(request_id, None)
            self.bounds.give(self.sizes.pop(request_id, 0))

    async def _serve(self, request_id: int, request: Request) -> None:
        payload, query, streaming = request.payload, dict(request.query), request.stream
        try:
            if streaming:
                window = None
                if request.window:
                    window = self.windows[request_id] = framing.Window(request.window)
                async with contextlib.aclosing(self.service.stream(payload, query)) as chunks:
                    async for chunk in chunks:
                        if window is not None:
                            await window.take()
                        await self._send(framing.encode_payload(request_id, framing.CHUNK, chunk))
                await self._send([framing.encode(Frame(id=request_id, end=End(load=self._answer_load())))])
            else:
                result = await self.service.infer(payload, query)
                await self._send(framing.encode_payload(request_id, framing.RESPONSE, result, load=self._answer_load()))
        except Exception as exc:
            error = as_anyserve_error(exc)
            frame = Frame(id=request_id, error=Error(code=error.code, message=error.message))
            await self._send([framing.encode(frame)])

    def _answer_load(self) -> str:
        """What the service reports of its load with each answer, or nothing."""
        return self._load_of() if self._load_of is not None else ""

    async def _send(self, buffers: Sequence[bytes | memoryview]) -> None:
        size = framing.frame_size(buffers)
        if size > self.max_frame_bytes:
            raise ResourceExhausted(
                f"response frame of {size} bytes exceeds the {self.transport} transport's "
                f"max_frame_bytes={self.max_frame_bytes}"
            )
        with contextlib.suppress(ConnectionError):  # the agent is gone; run() is about to cancel us
            await self.out.write(buffers)

    async def _stop_all(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _, slow = await asyncio.wait(tasks, timeout=_CANCEL_GRACE_S)
            if slow:
                log.warning("%d handler(s) ignored cancellation for %.0fs", len(slow), _CANCEL_GRACE_S)


def _remove_stale(address: str) -> None:
    """Unlink a socket file no live worker listens on; refuse anything else."""
    try:
        st = os.lstat(address)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise Unavailable(f"{address} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(address)
    except ConnectionRefusedError:
        os.unlink(address)  # stale: left behind by a worker that died
        return
    except FileNotFoundError:
        return
    except BlockingIOError:
        pass  # listening, backlog full: alive
    finally:
        probe.close()
    raise Unavailable(f"unix socket {address} is already served by a live worker")


def bind(address: str, backlog: int = 128) -> socket.socket:
    """A listening socket at ``address``, readable and writable by its owner only.

    The mode is set before ``listen()`` so no other user can connect in the
    window between creating the file and restricting it.
    """
    _remove_stale(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address)
        os.chmod(address, SOCKET_MODE)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _unlink_if_ours(address: str, ident: tuple[int, int]) -> None:
    """Remove the socket file unless a successor has already replaced it."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(address)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(address)


async def serve(
    address: str, service: WorkerService, *, max_frame_bytes: int, stream_limit: int, bounds: Bounds | None = None
) -> None:
    """Serve on a Unix socket until cancelled; then close every session and remove the socket file."""
    sock = bind(address)
    st = os.lstat(address)
    ident = (st.st_dev, st.st_ino)
    try:
        await _serve_sessions(
            lambda on_connect: asyncio.start_unix_server(on_connect, sock=sock, limit=stream_limit),
            service,
            max_frame_bytes,
            address,
            bounds=bounds,
        )
    except BaseException:
        sock.close()  # a no-op once the server owned and closed it
        raise
    finally:
        _unlink_if_ours(address, ident)


async def serve_tcp(
    host: str,
    port: int,
    service: WorkerService,
    *,
    max_frame_bytes: int,
    stream_limit: int,
    ssl: ssl_module.SSLContext | None = None,
    bounds: Bounds | None = None,
) -> None:
    """Serve on a TCP ``host:port`` (in TLS with ``ssl``) until cancelled; then close every session."""
    await _serve_sessions(
        lambda on_connect: asyncio.start_server(
            on_connect, host, port, limit=stream_limit, reuse_address=True, **_tls(ssl)
        ),
        service,
        max_frame_bytes,
        f"{host}:{port}",
        transport="tcp",
        bounds=bounds,
    )


def _tls(context: ssl_module.SSLContext | None) -> dict[str, Any]:
    """``start_server``'s TLS arguments: a handshake must finish in 10 s, as the frame hello must."""
    return {} if context is None else {"ssl": context, "ssl_handshake_timeout": framing.HANDSHAKE_TIMEOUT_S}


async def _serve_sessions(
    start: Callable[[Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]], Awaitable[asyncio.Server]],
    service: WorkerService,
    max_frame_bytes: int,
    where: str,
    *,
    transport: str = "unix",
    bounds: Bounds | None = None,
) -> None:
    sessions: set[asyncio.Task[None]] = set()
    bounds = bounds or Bounds(max_bytes_in_flight=2 * max_frame_bytes)

    def session_done(task: asyncio.Task[None]) -> None:
        sessions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session on %s failed", where, exc_info=task.exception())

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback that starts our own task: asyncio would wrap a
        # coroutine in a task of its own, and Python 3.11 reports such a task
        # as an error when shutdown cancels it.
        task = asyncio.create_task(Session(service, reader, writer, max_frame_bytes, transport, bounds).run())
        sessions.add(task)
        task.add_done_callback(session_done)

    server = await start(on_connect)
    sweeper = asyncio.create_task(bounds.sweep(where))
    try:
        await asyncio.Future()  # until cancelled
    finally:
        sweeper.cancel()
        server.close()
        for task in list(sessions):
            task.cancel()
        if sessions:
            await asyncio.wait(list(sessions), timeout=_CANCEL_GRACE_S + 1)
        await server.wait_closed()
