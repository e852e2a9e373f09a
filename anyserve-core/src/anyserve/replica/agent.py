"""The agent: ``inference.GRPCInferenceService`` in front of a replica's workers.

ModelInfer and ModelStreamInfer are registered with raw-bytes (de)serialisers:
the agent forwards request bytes to a worker and response bytes back, and
parses a request only when the capability query is not in the metadata.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from anyserve._proto import grpc_predict_v2_pb2 as pb
from anyserve.delegation import Delegation
from anyserve.errors import AnyServeError, CapabilityNotFound, ResourceExhausted
from anyserve.plugins import PluginManager
from anyserve.replica import query as queries
from anyserve.replica.pool import WorkerPool, WorkerSlot
from anyserve.replica.worker import parse_request
from anyserve.transport import Query
from anyserve.version import __version__

if TYPE_CHECKING:
    from anyserve.replica.lifecycle import Lifecycle

log = logging.getLogger("anyserve.agent")

SERVICE = "inference.GRPCInferenceService"
#: A small extra service for ``anyserve status``: Get returns the replica's status as JSON.
STATUS_SERVICE = "anyserve.ReplicaStatus"
FINAL_PARAMETER = "triton_final_response"
LIMIT_SETTING = "replica.max_message_bytes (ANYSERVE_MAX_MESSAGE_BYTES, --max-message-bytes)"

#: gRPC metadata, or the same pairs carried by the router link.
Metadata = Iterable[tuple[str, str]]
#: Forwards a delegated request: (delegation, payload, query) -> response bytes.
Forwarder = Callable[[Delegation, bytes, Query], Awaitable[bytes]]


class Agent:
    """Answers KServe v2 calls by handing requests to the worker pool."""

    def __init__(
        self,
        pool: WorkerPool,
        pm: PluginManager,
        *,
        replica_id: str,
        max_message_bytes: int,
        router_url: str | None = None,
        forward: Forwarder | None = None,
        lifecycle: Lifecycle | None = None,
        offers: Callable[[], list[dict[str, Any]]] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.pool = pool
        self.pm = pm
        self.replica_id = replica_id
        self.max_message_bytes = max_message_bytes
        self.router_url = router_url
        self.forward = forward
        self.lifecycle = lifecycle
        self.offers = offers or pool.offers
        self.status = status or (lambda: {"replica_id": replica_id, "workers": pool.snapshot()})
        self.ready = False

    # -- gRPC plumbing -----------------------------------------------------

    def generic_handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        return (self._inference_handler(), self._status_handler())

    def _status_handler(self) -> grpc.GenericRpcHandler:
        async def get(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return json.dumps(self.status(), default=str).encode()

        return grpc.method_handlers_generic_handler(STATUS_SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)})

    def _inference_handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, req: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=lambda m: m.SerializeToString()
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
                "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
                "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
                "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
                # bytes in, bytes out: nothing is parsed that need not be
                "ModelInfer": grpc.unary_unary_rpc_method_handler(self.model_infer),
                "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.model_stream_infer),
            },
        )

    # -- health and metadata ------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.ready and bool(self.offers()))

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="anyserve", version=__version__, extensions=["model_stream_infer"])

    def _model_query(self, name: str, version: str, context: grpc.aio.ServicerContext) -> dict[str, str]:
        query = queries.from_metadata(context.invocation_metadata())
        if not query:
            query = queries.from_request(pb.ModelInferRequest(model_name=name, model_version=version))
        return query

    def _servable(self, query: Query) -> bool:
        """Served now by a running worker, or by a worker class that can start."""
        for stream in (False, True):
            if self.pool.choose(query, stream=stream) is not None:
                return True
            if self.lifecycle is not None and self.lifecycle.match(query, stream=stream) is not None:
                return True
        return False

    async def model_ready(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        query = self._model_query(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self._servable(query))

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        query = self._model_query(request.name, request.version, context)
        if not self._servable(query):
            await context.abort(grpc.StatusCode.NOT_FOUND, self._not_found(query).message)
        return pb.ModelMetadataResponse(
            name=request.name, versions=[request.version] if request.version else [], platform="anyserve"
        )

    # -- inference ----------------------------------------------------------

    def _not_found(self, query: Query, reason: str = "") -> CapabilityNotFound:
        why = f"; not delegated: {reason}" if reason else ""
        return CapabilityNotFound(
            f"no capability matches {dict(query)} on replica {self.replica_id}; it offers: "
            f"{'; '.join(str(o) for o in self.offers()) or 'nothing'}{why}"
        )

    def _check_size(self, what: str, size: int) -> None:
        if size > self.max_message_bytes:
            raise ResourceExhausted(
                f"{what} of {size} bytes exceeds the limit of {self.max_message_bytes} bytes set by {LIMIT_SETTING}"
            )

    async def model_infer(self, payload: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await self.infer(payload, context.invocation_metadata() or (), context.time_remaining())
        except AnyServeError as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.message)
            raise  # abort raises; this keeps type checkers honest

    async def infer(self, payload: bytes, metadata: Metadata, timeout: float | None) -> bytes:
        """One unary request, whatever carried it (gRPC or the router link); raises :class:`AnyServeError`.

        ``metadata`` holds the capability query (``x-capability-*``) and the
        delegation marks; without a query the request itself is parsed for one.
        """
        self._check_size("request", len(payload))
        query = queries.from_metadata(metadata) or queries.from_request(parse_request(payload))
        slot = await self._worker_for(query, False, timeout)
        if slot is None:
            return await self._delegate(payload, query, queries.delegation_depth(metadata))
        slot.last_used = time.monotonic()
        try:
            response = await slot.connection.infer(payload, query)
        finally:
            slot.last_used = time.monotonic()
        self._check_size("response", len(response))
        return response

    async def _worker_for(self, query: Query, stream: bool, timeout: float | None) -> WorkerSlot | None:
        """A running worker, else a worker class started for this request (waiting up to its deadline)."""
        slot = self.pool.choose(query, stream=stream)
        if slot is None and self.lifecycle is not None:
            slot = await self.lifecycle.acquire(query, stream=stream, timeout=timeout)
        return slot

    async def _delegate(self, payload: bytes, query: Query, depth: int) -> bytes:
        decision: Delegation | None = self.pm.hook.anyserve_delegate(
            query=dict(query), origin=self.replica_id, depth=depth, router_url=self.router_url
        )
        if decision is None or decision.refused:
            raise self._not_found(query, decision.reason if decision else "no delegation policy answered")
        if self.forward is None:
            raise self._not_found(query, "this replica cannot forward requests (no router client)")
        log.info("delegating %s to %s", dict(query), decision.url)
        return await self.forward(decision, payload, query)

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        meta_query = queries.from_metadata(context.invocation_metadata())
        async for payload in requests:
            async with contextlib.aclosing(self.stream(payload, meta_query, context.time_remaining())) as run:
                async for response in run:
                    yield response

    async def stream(self, payload: bytes, meta_query: Query, timeout: float | None) -> AsyncIterator[bytes]:
        """One streaming request's run of responses, the last one flagged final (errors included)."""
        try:
            self._check_size("request", len(payload))
            request = parse_request(payload)
        except AnyServeError as exc:
            yield final_error(exc, "")
            return
        query = meta_query or queries.from_request(request)
        try:
            slot = await self._worker_for(query, True, timeout)
            if slot is None:
                raise self._not_found(query)
            slot.last_used = time.monotonic()
            async with contextlib.aclosing(slot.connection.stream(payload, query)) as chunks:
                async for chunk in chunks:
                    yield chunk
            slot.last_used = time.monotonic()
        except AnyServeError as exc:
            yield final_error(exc, request.id)
            return
        yield final_marker(request.id)


def final_marker(request_id: str) -> bytes:
    """The empty response that closes one request's run (Triton's convention)."""
    response = pb.ModelInferResponse(id=request_id)
    response.parameters[FINAL_PARAMETER].bool_param = True
    return pb.ModelStreamInferResponse(infer_response=response).SerializeToString()


def final_error(exc: AnyServeError, request_id: str) -> bytes:
    """An error that also closes the run: no response follows it for this request."""
    response = pb.ModelInferResponse(id=request_id)
    response.parameters[FINAL_PARAMETER].bool_param = True
    message = f"{exc.code}: {exc.message}"
    return pb.ModelStreamInferResponse(error_message=message, infer_response=response).SerializeToString()
