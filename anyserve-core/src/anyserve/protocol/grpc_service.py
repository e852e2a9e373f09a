"""``inference.GRPCInferenceService`` as a grpc.aio handler over any object with its methods.

A replica's agent and the router's gRPC front serve the same service; this
is its one method table. ``ModelInfer`` and ``ModelStreamInfer`` are
registered without (de)serialisers: a front forwards request and response
bytes it need not read. The other methods take and return messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

from anyserve.protocol import messages as pb
from anyserve.protocol.names import INFERENCE_SERVICE

Context = grpc.aio.ServicerContext


class InferenceServicer(Protocol):
    """What a front implements; each method as ``grpc.aio`` calls it."""

    def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Awaitable[Any]: ...
    def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Awaitable[Any]: ...
    def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Awaitable[Any]: ...
    def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Awaitable[Any]: ...
    def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Awaitable[Any]: ...
    def model_infer(self, payload: bytes, context: Context) -> Awaitable[bytes]: ...
    def model_stream_infer(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]: ...


async def each_run(
    requests: AsyncIterator[bytes], run: Callable[[bytes], AsyncIterator[bytes]]
) -> AsyncIterator[bytes]:
    """``ModelStreamInfer``'s shape: each request on the call answered by its own run, in order.

    A run is closed before the next request is read, so leaving the call
    (the client cancelled) stops the one in progress.
    """
    async for payload in requests:
        async with contextlib.aclosing(run(payload)) as responses:
            async for response in responses:
                yield response


def _unary(fn: Any, request: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=request.FromString, response_serializer=lambda m: m.SerializeToString()
    )


def inference_handler(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The service's method table over ``servicer``, ready for ``server.add_generic_rpc_handlers``."""
    return grpc.method_handlers_generic_handler(
        INFERENCE_SERVICE,
        {
            "ServerLive": _unary(servicer.server_live, pb.ServerLiveRequest),
            "ServerReady": _unary(servicer.server_ready, pb.ServerReadyRequest),
            "ServerMetadata": _unary(servicer.server_metadata, pb.ServerMetadataRequest),
            "ModelReady": _unary(servicer.model_ready, pb.ModelReadyRequest),
            "ModelMetadata": _unary(servicer.model_metadata, pb.ModelMetadataRequest),
            # bytes in, bytes out: nothing is parsed that need not be
            "ModelInfer": grpc.unary_unary_rpc_method_handler(servicer.model_infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(servicer.model_stream_infer),
        },
    )
