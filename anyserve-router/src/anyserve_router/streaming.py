"""The stream bridge: a replica's ModelStreamInfer responses -> the bytes of an HTTP stream.

What each response becomes is the front's choice (:class:`StreamEvents`):
:class:`KServeEvents` writes ``encoder.event`` of its KServe JSON, the
OpenAI front writes chunks. The empty final marker Triton's convention
ends a run with is skipped; an ``error_message`` becomes ``events.error``
and ends the stream; a normal end writes ``events.end()``. When the HTTP
client goes away the response is cancelled, which cancels the upstream
call, which stops the handler on the replica.

A reader task encodes responses as they arrive and the HTTP side writes
whatever has piled up since its last write in one piece. A single waiting
response goes out at once, nothing is held back for company, but responses
that arrived together (a burst of tokens) cost one write and one wake-up of
the client instead of one each. The reader stays at most ``READ_AHEAD``
events ahead of the writes, so a slow client still slows the replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from anyserve.encoding import StreamEncoder
from anyserve.errors import Unavailable
from anyserve.protocol import is_final, response_to_json, split_error
from anyserve.protocol import messages as pb
from anyserve.protocol.names import DELEGATED_PARAMETER, FINAL_PARAMETER
from anyserve_router.forwarding import Forwarded, ReplicaFailed
from anyserve_router.registry import Lease
from anyserve_router.upstream import Target, UpstreamError, UpstreamStream

log = logging.getLogger("anyserve.router.stream")

#: Encoded events the reader may hold that the HTTP side has not written yet.
READ_AHEAD = 64
#: Headers every streamed answer carries: no caching, no proxy buffering.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def parse(raw: bytes) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse.FromString(raw)


def bad_response(target: Target, exc: Exception) -> Unavailable:
    return Unavailable(f"replica {target.replica_id!r} answered with an invalid ModelInferResponse: {exc}")


def open_bridge(done: Forwarded[tuple[UpstreamStream, bytes | None]], events: StreamEvents) -> StreamBridge:
    """The bridge for a stream just opened; one that failed before producing anything raises instead.

    So such a failure is answered as an HTTP error with its status, not as
    a 200 stream that fails at once.
    """
    stream, first = done.result
    if first is not None:
        try:
            error = parse(first).error_message
        except DecodeError as exc:
            stream.cancel()
            done.lease.release()
            raise bad_response(done.target, exc) from None
        if error:
            stream.cancel()
            done.lease.release()
            code, message = split_error(error)
            raise ReplicaFailed(message, code=code, replica_id=done.target.replica_id)
    return StreamBridge(stream, first, events, done.lease)


class StreamEvents(Protocol):
    """What a front writes for each upstream response, for a failure and at the end."""

    media_type: str

    def response(self, response: pb.ModelInferResponse) -> bytes:
        """The bytes for one response that carries outputs (may be empty: nothing to write)."""

    def error(self, message: str, code: str) -> bytes:
        """The bytes that report a failure; the stream ends after them."""

    def end(self) -> bytes:
        """The bytes after the last response of a stream that ended normally."""


class KServeEvents:
    """``POST /infer/stream``: each response as its KServe v2 JSON, in the configured stream encoding."""

    def __init__(self, encoder: StreamEncoder, delegated_from: str | None = None) -> None:
        self.encoder = encoder
        self.media_type = encoder.media_type
        self.delegated_from = delegated_from

    def response(self, response: pb.ModelInferResponse) -> bytes:
        data: dict[str, Any] = response_to_json(response)
        data["parameters"].pop(FINAL_PARAMETER, None)
        if self.delegated_from is not None:
            data["parameters"][DELEGATED_PARAMETER] = self.delegated_from
        return self.encoder.event(data)

    def error(self, message: str, code: str) -> bytes:
        return self.encoder.error(message, code)

    def end(self) -> bytes:
        return self.encoder.end()


class StreamBridge:
    """One open upstream stream, its first response already read, to be written to one client."""

    def __init__(self, upstream: UpstreamStream, first: bytes | None, events: StreamEvents, lease: Lease) -> None:
        self.upstream = upstream
        self.first = first
        self.events = events
        self.lease = lease

    def close(self) -> None:
        """Cancel the upstream call if still running and release the lease; idempotent."""
        self.upstream.cancel()
        self.lease.release()

    def _encode(self, raw: bytes, out: _Events) -> bool:
        """Put one upstream response's event(s) into ``out``; True if it ended the stream."""
        message = parse(raw)
        if message.error_message:
            code, text = split_error(message.error_message)
            out.put(self.events.error(text, code))
            return True
        response = message.infer_response
        final = is_final(response)
        if response.outputs or not final:
            out.put(self.events.response(response))
        if final:
            out.put(self.events.end())
        return final

    async def _read(self, out: _Events) -> None:
        """Encode upstream responses into ``out`` until the stream's last event."""
        try:
            while (raw := await self.upstream.read()) is not None:
                if self._encode(raw, out):
                    return
                await out.room()
            out.put(self.events.end())
        except UpstreamError as exc:
            log.warning("stream from replica %s failed: %s: %s", self.lease.replica_id, exc.code, exc.message)
            out.put(self.events.error(exc.message, exc.code))
        finally:
            out.finish()

    async def body(self) -> AsyncIterator[bytes]:
        """The encoded stream; cancelling it (client gone) cancels the upstream call."""
        out = _Events()
        first, self.first = self.first, None
        reader: asyncio.Task[None] | None = None
        try:
            # The first response is already here: encoded now, it leaves without waiting for the reader task.
            if first is None:
                out.put(self.events.end())
                out.finish()
            elif self._encode(first, out):
                out.finish()
            else:
                reader = asyncio.create_task(self._read(out))
            while (events := await out.take()) is not None:
                yield events
            if reader is not None:
                await reader  # re-raises what the reader did not expect
        finally:
            if reader is not None:
                reader.cancel()
            self.close()


class _Events:
    """Encoded events from the bridge's reader to its writer, taken all at once."""

    __slots__ = ("_events", "_finished", "_ready", "_room")

    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._finished = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def put(self, event: bytes) -> None:
        if not event:
            return
        self._events.append(event)
        if len(self._events) >= READ_AHEAD:
            self._room.clear()
        self._ready.set()

    async def room(self) -> None:
        await self._room.wait()

    def finish(self) -> None:
        self._finished = True
        self._ready.set()

    async def take(self) -> bytes | None:
        """Everything put since the last take, as one piece; ``None`` once finished and empty."""
        while not self._events:
            if self._finished:
                return None
            self._ready.clear()
            await self._ready.wait()
        events, self._events = self._events, []
        self._room.set()
        return events[0] if len(events) == 1 else b"".join(events)


class BridgeResponse(StreamingResponse):
    """A streaming response that always closes its bridge, even if the body was never started."""

    def __init__(self, bridge: StreamBridge, headers: dict[str, str]) -> None:
        super().__init__(bridge.body(), headers=headers, media_type=bridge.events.media_type)
        self.bridge = bridge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.bridge.close()
