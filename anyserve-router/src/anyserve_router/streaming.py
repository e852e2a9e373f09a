"""The stream bridge: a replica's ModelStreamInfer responses -> stream-encoding bytes.

Each response becomes ``encoder.event`` of its KServe JSON; the empty final
marker Triton's convention ends a run with is skipped; an ``error_message``
becomes ``encoder.error`` and ends the stream; a normal end writes
``encoder.end()``. When the HTTP client goes away the response is
cancelled, which cancels the upstream call, which stops the handler on the
replica.

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
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from anyserve.encoding import StreamEncoder
from anyserve.protocol import is_final, response_to_json, split_error
from anyserve.protocol import messages as pb
from anyserve.protocol.names import DELEGATED_PARAMETER, FINAL_PARAMETER
from anyserve_router.registry import Lease
from anyserve_router.upstream import UpstreamError, UpstreamStream

log = logging.getLogger("anyserve.router.stream")

#: Encoded events the reader may hold that the HTTP side has not written yet.
READ_AHEAD = 64


def parse(raw: bytes) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse.FromString(raw)


class StreamBridge:
    """One open upstream stream, its first response already read, to be written to one client."""

    def __init__(
        self,
        upstream: UpstreamStream,
        first: bytes | None,
        encoder: StreamEncoder,
        lease: Lease,
        delegated_from: str | None = None,
    ) -> None:
        self.upstream = upstream
        self.first = first
        self.encoder = encoder
        self.lease = lease
        self.delegated_from = delegated_from

    def close(self) -> None:
        """Cancel the upstream call if still running and release the lease; idempotent."""
        self.upstream.cancel()
        self.lease.release()

    def _event(self, response: pb.ModelInferResponse) -> bytes:
        data: dict[str, Any] = response_to_json(response)
        data["parameters"].pop(FINAL_PARAMETER, None)
        if self.delegated_from is not None:
            data["parameters"][DELEGATED_PARAMETER] = self.delegated_from
        return self.encoder.event(data)

    def _encode(self, raw: bytes, out: _Events) -> bool:
        """Put one upstream response's event(s) into ``out``; True if it ended the stream."""
        message = parse(raw)
        if message.error_message:
            code, text = split_error(message.error_message)
            out.put(self.encoder.error(text, code))
            return True
        response = message.infer_response
        final = is_final(response)
        if response.outputs or not final:
            out.put(self._event(response))
        if final:
            out.put(self.encoder.end())
        return final

    async def _read(self, out: _Events) -> None:
        """Encode upstream responses into ``out`` until the stream's last event."""
        try:
            while (raw := await self.upstream.read()) is not None:
                if self._encode(raw, out):
                    return
                await out.room()
            out.put(self.encoder.end())
        except UpstreamError as exc:
            log.warning("stream from replica %s failed: %s: %s", self.lease.replica_id, exc.code, exc.message)
            out.put(self.encoder.error(exc.message, exc.code))
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
                out.put(self.encoder.end())
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
        super().__init__(bridge.body(), headers=headers, media_type=bridge.encoder.media_type)
        self.bridge = bridge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.bridge.close()
