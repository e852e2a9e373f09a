"""Length-prefixed protobuf frames on an asyncio stream.

A frame is a 4-byte big-endian unsigned length followed by that many bytes
of a serialised :class:`Frame`. Frames that carry a payload (``Request``,
``Response``, ``Chunk``) are encoded by hand with the payload field last, so
a multi-megabyte payload is handed to the socket as is instead of being
copied into a protobuf message and then copied again by serialisation. The
result is an ordinary ``Frame``: any protobuf parser reads it, because field
order on the wire is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError

from anyserve_transport_unix.frames_pb2 import Frame, Request

PROTOCOL_VERSION = 3  # sent in Hello; bump on incompatible frame changes (2: stream credit; 3: client hello)
#: The connecting side's hello, read before the service admits it: small, and soon, or the connection closes.
HANDSHAKE_MAX_BYTES = 64 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
HEADER = struct.Struct(">I")
MAX_FRAME_LIMIT = 0xFFFFFFFF  # what the 4-byte length can express
DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024

# Payloads at least this big are written as their own buffer (never joined,
# so never copied), are never batched, and wait for backpressure before they
# are written. Smaller frames are joined: one write is cheaper than two.
BIG_PAYLOAD_BYTES = 64 * 1024

# A stream's receiver lets the sender run FIRST_WINDOW chunks ahead; once it
# has consumed those it opens the window to STREAM_WINDOW, then grants
# STREAM_CREDIT more each time it has consumed that many. The small first
# window is for the first token: a producer sharing a core with its readers
# stops after a few chunks, so they run and forward the first one, instead
# of waiting for the producer's time slice to end (about 1.5 ms on Linux).
FIRST_WINDOW = 4
STREAM_WINDOW = 32
STREAM_CREDIT = STREAM_WINDOW // 2

# Field numbers of Frame's oneof members that carry a payload (see frames.proto).
REQUEST, RESPONSE, CHUNK = 3, 4, 5
_PAYLOAD_TAG = b"\x0a"  # field 1, wire type 2 (length-delimited), in Request/Response/Chunk
_LOAD_TAG = b"\x12"  # field 2, wire type 2, in Response


class Window:
    """The sending side of a stream's credit: chunks it may still send before waiting.

    Without credit a fast producer runs ahead of a slow consumer and its
    chunks pile up in the receiver's memory. The receiver opens the window
    from ``FIRST_WINDOW`` to ``STREAM_WINDOW`` once it has consumed the
    first chunks, then grants ``STREAM_CREDIT`` each time it has consumed
    that many.
    """

    __slots__ = ("_granted", "available")

    def __init__(self, size: int) -> None:
        self.available = size
        self._granted: asyncio.Event | None = None

    async def take(self) -> None:
        while self.available <= 0:
            self._granted = asyncio.Event()
            await self._granted.wait()
        self.available -= 1

    def grant(self, chunks: int) -> None:
        self.available += chunks
        if self._granted is not None:
            self._granted.set()


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; the connection must close."""


class FrameTooLarge(ProtocolError):
    """A frame is longer than the configured ``max_frame_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds max_frame_bytes={limit}")
        self.size = size
        self.limit = limit


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int) -> bytes:
    return _varint(field << 3 | 2)


def encode(frame: Frame) -> bytes:
    """Header plus body of a small control frame (Hello, End, Error, Cancel)."""
    body = frame.SerializeToString()
    return HEADER.pack(len(body)) + body


def encode_payload(
    request_id: int,
    field: int,
    payload: bytes,
    query: Mapping[str, str] | None = None,
    stream: bool = False,
    window: int = 0,
    load: str = "",
) -> list[bytes | memoryview]:
    """Buffers of one payload frame; ``field`` is REQUEST, RESPONSE or CHUNK.

    ``query``, ``stream`` and ``window`` only apply to REQUEST, ``load`` to
    RESPONSE. The payload is returned as its own buffer (never copied); the
    caller writes the buffers in order.
    """
    if field == REQUEST:
        rest = Request(query=query, stream=stream, window=window).SerializeToString()
    elif load:  # before the payload, as protobuf takes fields in any order: Response.load (field 2)
        data = load.encode("utf-8")
        rest = _LOAD_TAG + _varint(len(data)) + data
    else:
        rest = b""
    tail = rest + _PAYLOAD_TAG + _varint(len(payload))
    inner_len = len(tail) + len(payload)
    head = (b"\x08" + _varint(request_id) if request_id else b"") + _tag(field) + _varint(inner_len) + tail
    size = len(head) + len(payload)
    return [HEADER.pack(size) + head, payload]


def frame_size(buffers: Sequence[bytes | memoryview]) -> int:
    """Body length of an encoded frame (without the 4-byte header)."""
    return sum(len(b) for b in buffers) - HEADER.size


def enlarge_socket_buffers(writer: asyncio.StreamWriter, size: int = SOCKET_BUFFER_BYTES) -> None:
    """Ask the kernel for bigger socket buffers (best effort; Linux caps them at wmem_max/rmem_max).

    The default (~200 KiB) makes a multi-megabyte frame cost dozens of
    send/recv wake-ups on each side; 4 MiB roughly doubles big-payload
    throughput and costs nothing for small frames, since the kernel only
    commits memory for data actually queued.
    """
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


class FrameWriter:
    """Writes whole frames: small ones batched per loop iteration, big ones paced.

    The first frame of an iteration is written at once (no added latency);
    small frames that follow it in the same iteration — many requests
    finishing together under load — leave in one ``send()`` at the end of
    the iteration, so the peer wakes once for all of them. Queuing never
    awaits, so frames from concurrent tasks cannot interleave.

    Big frames are never batched or joined: their payload buffer goes to the
    transport as is. :meth:`write` makes a big frame wait until the socket has
    caught up, so concurrent big requests wait in their tasks instead of
    piling up in the transport's buffer, which Python 3.11 copies whole each
    time it grows.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._queue: list[bytes | memoryview] = []
        self._loop = asyncio.get_running_loop()
        self._batching = False

    def send(self, buffers: Sequence[bytes | memoryview]) -> bool:
        """Write or queue one frame now; False (nothing sent) if the connection is closing."""
        if self.writer.is_closing():
            return False
        if self._batching and len(buffers[-1]) < BIG_PAYLOAD_BYTES:
            self._queue.extend(buffers)
            return True
        if self._queue:  # what is queued goes first, to keep frame order
            queue, self._queue = self._queue, []
            self._write(queue)
        self._write(buffers)
        if not self._batching:
            self._batching = True
            self._loop.call_soon(self.flush)
        return True

    async def write(self, buffers: Sequence[bytes | memoryview]) -> None:
        """Send one frame with backpressure; ``ConnectionError`` if the connection was lost."""
        if len(buffers[-1]) >= BIG_PAYLOAD_BYTES:
            transport = self.writer.transport
            _, high = transport.get_write_buffer_limits()
            while transport.get_write_buffer_size() > high and not transport.is_closing():
                await self.writer.drain()  # the transport is paused above `high`, so this waits
        if self.send(buffers):
            await self.writer.drain()

    def flush(self) -> None:
        """Hand everything queued to the transport now."""
        self._batching = False
        queue, self._queue = self._queue, []
        if queue and not self.writer.is_closing():
            self._write(queue)

    def _write(self, buffers: Sequence[bytes | memoryview]) -> None:
        start = 0
        for i, buffer in enumerate(buffers):
            if len(buffer) >= BIG_PAYLOAD_BYTES:
                if start < i:
                    self.writer.write(b"".join(buffers[start:i]))
                self.writer.write(buffer)
                start = i + 1
        if start < len(buffers):
            self.writer.write(b"".join(buffers[start:]) if start + 1 < len(buffers) else buffers[start])

    def close(self) -> None:
        """Flush what is queued (a final error frame, cancels) and close."""
        self.flush()
        self.writer.close()


async def read(reader: asyncio.StreamReader, max_frame_bytes: int) -> Frame | None:
    """Read one frame; ``None`` on a clean end of stream between frames.

    Raises :class:`FrameTooLarge` before reading an oversize body,
    :class:`ProtocolError` for an undecodable body, and
    ``asyncio.IncompleteReadError`` when the stream ends inside a frame.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (size,) = HEADER.unpack(header)
    if size > max_frame_bytes:
        raise FrameTooLarge(size, max_frame_bytes)
    return decode(await reader.readexactly(size))


def decode(body: bytes) -> Frame:
    """A frame's body as a :class:`Frame`; :class:`ProtocolError` when it is not one."""
    try:
        return Frame.FromString(body)
    except DecodeError as exc:
        raise ProtocolError(f"undecodable frame of {len(body)} bytes: {exc}") from exc
