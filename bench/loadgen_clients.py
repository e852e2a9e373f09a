"""The load generator's two clients: ``grpc.aio`` (raw-bytes method handles) and a small asyncio HTTP/1.1 client.

Used by ``bench/loadgen.py`` (a script; this module is imported from its directory).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Awaitable, Callable

import grpc
from loadgen_measure import Call

from anyserve.protocol import messages as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
MIB = 1024 * 1024
MAX_MESSAGE = 512 * MIB


# -- gRPC client ------------------------------------------------------------------


class GrpcClient:
    def __init__(self, target: str) -> None:
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        self.channel = grpc.aio.insecure_channel(target, options=options)
        self.infer = self.channel.unary_unary(INFER)
        self.stream = self.channel.stream_stream(STREAM)

    async def ready(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    def unary(self, payload: bytes, capability: str) -> Call:
        metadata = (("x-capability-type", capability),)
        infer = self.infer

        async def call() -> bytes:
            return await infer(payload, metadata=metadata)

        return call

    def unary_with(self, payload: bytes, metadata: tuple[tuple[str, str], ...]) -> Call:
        infer = self.infer

        async def call() -> bytes:
            return await infer(payload, metadata=metadata)

        return call

    def streamer(self, payload: bytes) -> Callable[[Callable[[], None]], Awaitable[int]]:
        metadata = (("x-capability-type", "tokens"),)
        stream = self.stream

        async def run(on_token: Callable[[], None]) -> int:
            call = stream(iter((payload,)), metadata=metadata)
            n = 0
            pending = None
            async for message in call:
                # Every message but the run's closing marker is a token.
                if pending is not None:
                    on_token()
                    n += 1
                pending = message
            return n

        return run

    async def check_stream(self, payload: bytes) -> int:
        """Parse one whole stream: the count of text tokens, with the marker checked."""
        call = self.stream(iter((payload,)), metadata=(("x-capability-type", "tokens"),))
        messages = [pb.ModelStreamInferResponse.FromString(m) async for m in call]
        assert messages and not any(m.error_message for m in messages), messages[-1:]
        assert messages[-1].infer_response.parameters["triton_final_response"].bool_param, "no final marker"
        return sum(1 for m in messages if m.infer_response.outputs)

    async def close(self) -> None:
        await self.channel.close()


# -- HTTP/1.1 client ----------------------------------------------------------------


class HttpError(Exception):
    pass


class HttpConn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int, ssl: ssl_module.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.ssl = ssl
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        #: The last response's status line and headers, as received (for checks; never parsed when measuring).
        self.last_head = b""

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=4 * MIB, ssl=self.ssl)

    def head(self, path: str, body_len: int, extra: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {body_len}"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _response_head(self) -> tuple[int, int | None]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.last_head = head
        status = int(head[9:12])
        length = None
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.index(b"\r\n", i + 2)
            length = int(lower[i + 17 : j])
        elif b"transfer-encoding: chunked" not in lower:
            raise HttpError(f"neither Content-Length nor chunked: {head!r}")
        return status, length

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(head)
        self.writer.write(body)
        if len(body) > 256 * 1024:
            await self.writer.drain()
        status, length = await self._response_head()
        if length is not None:
            return status, await self.reader.readexactly(length)
        chunks = []
        async for chunk in self._chunks():
            chunks.append(chunk)
        return status, b"".join(chunks)

    async def _chunks(self):
        reader = self.reader
        assert reader is not None
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    async def sse(self, head: bytes, body: bytes, on_token: Callable[[], None]) -> int:
        """POST and read an SSE answer: ``on_token`` per ``data:`` event, until ``event: end``."""
        assert self.writer is not None
        self.writer.write(head)
        self.writer.write(body)
        status, length = await self._response_head()
        if status != 200:
            data = await self.reader.readexactly(length) if length is not None else b""  # type: ignore[union-attr]
            raise HttpError(f"HTTP {status}: {data[:300]!r}")
        buffer = b""
        n = 0
        ended = False
        async for chunk in self._chunks():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if event.startswith(b"data: "):
                    on_token()
                    n += 1
                elif event.startswith(b"event: end"):
                    ended = True
                elif event.startswith(b"event: error"):
                    raise HttpError(event.decode(errors="replace"))
        if not ended:
            raise HttpError("stream ended without 'event: end'")
        return n

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HttpClient:
    """``extra`` headers go with every request (an API key); ``ssl`` makes the connections HTTPS."""

    def __init__(
        self, target: str, extra: dict[str, str] | None = None, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        host, _, port = target.rpartition(":")
        self.host, self.port = host, int(port)
        self.extra = dict(extra or {})
        self.ssl = ssl
        self.conns: list[HttpConn] = []

    async def ready(self, timeout: float = 30) -> None:
        pass

    async def conn(self) -> HttpConn:
        conn = HttpConn(self.host, self.port, self.ssl)
        await conn.connect()
        self.conns.append(conn)
        return conn

    async def pool(self, n: int) -> list[HttpConn]:
        return [await self.conn() for _ in range(n)]

    def headers(self, capability: str) -> dict[str, str]:
        return {"Content-Type": "application/x-protobuf", "X-Capability-Type": capability, **self.extra}

    def unary(
        self,
        conn: HttpConn,
        payload: bytes,
        capability: str,
        path: str = "/infer",
        headers: dict[str, str] | None = None,
    ) -> Call:
        """A call POSTing ``payload`` to ``path``: protobuf headers for ``capability`` unless ``headers`` are given."""
        head = conn.head(path, len(payload), self.headers(capability) if headers is None else headers)

        async def call() -> bytes:
            status, body = await conn.request(head, payload)
            if status != 200:
                raise HttpError(f"HTTP {status}: {body[:300]!r}")
            return body

        return call

    def streamer(
        self, conn: HttpConn, payload: bytes, headers: dict[str, str] | None = None
    ) -> Callable[[Callable[[], None]], Awaitable[int]]:
        head = conn.head("/infer/stream", len(payload), self.headers("tokens") if headers is None else headers)

        async def run(on_token: Callable[[], None]) -> int:
            return await conn.sse(head, payload, on_token)

        return run

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        self.conns = []
