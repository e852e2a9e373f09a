"""The stream bridge: a replica's ModelStreamInfer responses -> stream-encoding bytes.

Each response is written as it arrives (``encoder.event`` of its KServe
JSON) with nothing buffered; the empty final marker Triton's convention ends
a run with is skipped; an ``error_message`` becomes ``encoder.error`` and
ends the stream; a normal end writes ``encoder.end()``. When the HTTP client
goes away the response is cancelled, which cancels the gRPC call, which
stops the handler on the replica.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from anyserve._proto import grpc_predict_v2_pb2 as pb
from anyserve.encoding import StreamEncoder
from anyserve_router.registry import Lease
from anyserve_router.rest import response_to_json
from anyserve_router.upstream import UpstreamError, UpstreamStream

log = logging.getLogger("anyserve.router.stream")

FINAL_PARAMETER = "triton_final_response"
DELEGATED_PARAMETER = "anyserve.delegated_from"


def split_error(error_message: str) -> tuple[str, str]:
    """``"<CODE>: <message>"`` (the replica's convention) as ``(code, message)``; INTERNAL when uncoded."""
    code, sep, message = error_message.partition(": ")
    if sep and code and code.replace("_", "").isalpha() and code.isupper():
        return code, message
    return "INTERNAL", error_message


def parse(raw: bytes) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse.FromString(raw)


def is_final(response: pb.ModelInferResponse) -> bool:
    return FINAL_PARAMETER in response.parameters and response.parameters[FINAL_PARAMETER].bool_param


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

    async def body(self) -> AsyncIterator[bytes]:
        """The encoded stream; cancelling it (client gone) cancels the upstream call."""
        encoder = self.encoder
        raw = self.first
        self.first = None
        try:
            while raw is not None:
                message = parse(raw)
                if message.error_message:
                    code, text = split_error(message.error_message)
                    yield encoder.error(text, code)
                    return
                response = message.infer_response
                final = is_final(response)
                if response.outputs or not final:
                    yield self._event(response)
                if final:
                    break
                raw = await self.upstream.read()
            yield encoder.end()
        except UpstreamError as exc:
            log.warning("stream from replica %s failed: %s: %s", self.lease.replica_id, exc.code, exc.message)
            yield encoder.error(exc.message, exc.code)
        finally:
            self.close()


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
