"""The router's KServe v2 gRPC front: ``inference.GRPCInferenceService`` on a port of its own.

The same data plane as the HTTP front (:class:`~anyserve_router.forwarding.Router`),
reached the way stock gRPC clients (tritonclient.grpc, kserve's
``InferenceGRPCClient``) reach a single server: the capability comes from
``x-capability-*`` metadata, else from the model name and version. Request
and response bytes are forwarded unparsed, as on the HTTP front's protobuf
path. Standard health checking (``grpc.health.v1``, per capability) and
server reflection are served beside it.

Bounds: a request larger than ``router.max_body_bytes`` is refused by gRPC
itself; a ``ModelStreamInfer`` call serves its requests one at a time (a
client that sends many waits for each run), and a client that stops reading
stops the replica through the stream's flow control.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from anyserve import tls, tracing
from anyserve.delegation import MAX_DELEGATION_DEPTH
from anyserve.errors import AnyServeError, InvalidRequest
from anyserve.metric_names import UNMATCHED
from anyserve.protocol import RequestMeta, final_error, query_from_request
from anyserve.protocol import messages as pb
from anyserve.protocol.grpc_server import bounded_server
from anyserve.protocol.grpc_service import each_run, inference_handler
from anyserve.protocol.health import HealthServicer, add_health, enable_reflection
from anyserve.protocol.names import INFERENCE_SERVICE, SERVED_BY_HEADER
from anyserve_router import access_log
from anyserve_router.errors import NoMatch
from anyserve_router.metrics import GRPC_FRONT, ROUTED, UNCOUNTED
from anyserve_router.selection import candidates
from anyserve_router.version import __version__

if TYPE_CHECKING:
    from anyserve_router.app import RouterState

log = logging.getLogger("anyserve.router.grpc")

_SERVED_BY = SERVED_BY_HEADER.lower()
_INFER = f"/{INFERENCE_SERVICE}/ModelInfer"
_STREAM = f"/{INFERENCE_SERVICE}/ModelStreamInfer"


def _meta(context: grpc.aio.ServicerContext) -> RequestMeta:
    meta = RequestMeta.from_metadata(context.invocation_metadata(), timeout=context.time_remaining())
    if meta.depth > MAX_DELEGATION_DEPTH:
        raise NoMatch(f"refusing a request delegated {meta.depth} times: requests are delegated at most once")
    return meta.with_request_id()


def _with_query(meta: RequestMeta, payload: bytes) -> RequestMeta:
    """The query from the request itself when the metadata names none (a plain KServe client)."""
    if meta.query:
        return meta
    request = pb.parse_request(payload)
    query = query_from_request(request.model_name, request.model_version, request.parameters)
    if not query:
        raise InvalidRequest("the request names no capability: set model_name, or x-capability-<key> metadata")
    return meta.with_query(query)


def _model_query(meta: RequestMeta, name: str, version: str) -> RequestMeta:
    return meta if meta.query else meta.with_query(query_from_request(name, version, {}))


async def _abort(context: grpc.aio.ServicerContext, exc: AnyServeError) -> None:
    code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN)
    await context.abort(code, exc.message)


class RouterGrpc:
    """The gRPC methods over the router's shared state."""

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.router = state.router
        kind = state.settings.router.access_log
        #: ``router.access_log``'s logger, the HTTP front's; None when off.
        self.access = None if kind == access_log.OFF else access_log.access_logger(kind)

    def _logged(self, entry: access_log.Entry | None, code: str, request_id: str | None, replica: str | None) -> None:
        if entry is None or self.access is None:
            return
        entry.status, entry.request_id, entry.replica = code, request_id, replica
        access_log.routed(entry)
        self.access.info(entry.fields())

    # -- inference ------------------------------------------------------------------

    async def model_infer(self, payload: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metrics = self.router.metrics if self.router.metrics.enabled else UNCOUNTED
        start = time.perf_counter()
        ROUTED.set(UNMATCHED)
        metrics.in_flight[GRPC_FRONT] += 1
        code = "UNKNOWN"
        traced = None if tracing.tracer is None else tracing.start_grpc("ModelInfer", context.invocation_metadata())
        logged = None if self.access is None else access_log.Entry("GRPC", _INFER, GRPC_FRONT)
        request_id = replica = None
        try:
            try:
                meta = _with_query(_meta(context), payload)
                request_id = meta.request_id
                calling = self.router.infer(meta, payload)
                target, response = await (calling if traced is None else tracing.within(traced, calling))
            except AnyServeError as exc:
                code = exc.code
                await _abort(context, exc)
                raise  # abort raises; this keeps type checkers honest
            replica = target.replica_id
            await context.send_initial_metadata(((_SERVED_BY, replica),))
            code = "OK"
            return response
        finally:
            metrics.in_flight[GRPC_FRONT] -= 1
            metrics.answered(GRPC_FRONT, ROUTED.get(), code, time.perf_counter() - start)
            if traced is not None:
                tracing.end(traced, code)
            self._logged(logged, code, request_id, replica)

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Each request's run of responses, in order; a request that fails gets a final error, not an abort."""
        try:
            meta = _meta(context)
        except AnyServeError as exc:
            await _abort(context, exc)
            return
        traced = None if tracing.tracer is None else context.invocation_metadata()
        async for response in each_run(requests, lambda payload: self._run(meta, payload, traced)):
            yield response

    async def _run(self, meta: RequestMeta, payload: bytes, traced: Any = None) -> AsyncIterator[bytes]:
        """One request's run; counted as one request of the gRPC front, its responses timed as tokens.

        ``traced``: the call's metadata when tracing is on (each run is a span of its own).
        """
        metrics = self.router.metrics if self.router.metrics.enabled else UNCOUNTED
        start = time.perf_counter()
        ROUTED.set(UNMATCHED)
        metrics.in_flight[GRPC_FRONT] += 1
        code = "UNKNOWN"
        if traced is not None:
            traced = tracing.start_grpc("ModelStreamInfer", traced)
        logged = None if self.access is None else access_log.Entry("GRPC", _STREAM, GRPC_FRONT)
        replica = None
        try:
            try:
                meta = _with_query(meta, payload)
                opening = self.router.open_stream(meta, payload)
                done = await (opening if traced is None else tracing.within(traced, opening))
            except AnyServeError as exc:
                code = exc.code
                yield final_error(exc.code, exc.message, _request_id(payload))
                return
            replica = done.target.replica_id
            capability = ROUTED.get()
            stream, first = done.result
            last = 0.0
            try:
                response = first
                while response is not None:
                    now = time.perf_counter()
                    if last:
                        metrics.next_token(GRPC_FRONT, capability, now - last)
                    else:
                        metrics.first_token(GRPC_FRONT, capability, now - start)
                    last = now
                    yield response
                    response = await stream.read()
                code = "OK"
            except AnyServeError as exc:
                code = exc.code
                yield final_error(exc.code, exc.message, _request_id(payload))
            finally:
                stream.cancel()
                done.lease.release()
        finally:
            metrics.in_flight[GRPC_FRONT] -= 1
            metrics.answered(GRPC_FRONT, ROUTED.get(), code, time.perf_counter() - start)
            if traced is not None:
                tracing.end(traced, code)
            self._logged(logged, code, meta.request_id, replica)

    # -- health and metadata ---------------------------------------------------------

    def _offered(self, query: Any) -> bool:
        return bool(candidates(self.state.registry, query, self.router.matcher))

    async def server_live(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=bool(self.state.registry.live_ids()))

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        extensions = ["model_stream_infer", "anyserve_capability_routing"]
        return pb.ServerMetadataResponse(name="anyserve-router", version=__version__, extensions=extensions)

    async def model_ready(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        meta = _model_query(RequestMeta.from_metadata(context.invocation_metadata()), request.name, request.version)
        return pb.ModelReadyResponse(ready=self._offered(meta.query))

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            meta = _model_query(_meta(context), request.name, request.version)
            _, raw = await self.router.model_metadata(meta, request.SerializeToString())
        except AnyServeError as exc:
            await _abort(context, exc)
            raise
        return pb.ModelMetadataResponse.FromString(raw)

    def health(self, service: str) -> bool | None:
        """``""`` and the inference service: any live replica; ``type[/model]``: a live replica offers it."""
        if service in ("", INFERENCE_SERVICE):
            return bool(self.state.registry.live_ids())
        name, _, version = service.partition("/")
        query = query_from_request(name, version, {})
        if not query:
            return None
        return True if self._offered(query) else None


def _request_id(payload: bytes) -> str:
    try:
        return pb.ModelInferRequest.FromString(payload).id
    except DecodeError:
        return ""


#: gRPC channel arguments are C ints.


async def start_grpc_front(state: RouterState, host: str, port: int) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Serve the gRPC front on ``host:port`` (0: a free port); the server, its port and its health servicer.

    A port that cannot be bound raises ``OSError`` naming it.
    """
    settings = state.settings.router
    server = bounded_server(max_calls=settings.max_grpc_calls, receive_bytes=settings.max_body_bytes)
    front = RouterGrpc(state)
    server.add_generic_rpc_handlers((inference_handler(front),))
    health = HealthServicer(front.health, services=lambda: ("", INFERENCE_SERVICE))
    add_health(server, health)
    enable_reflection(server, (INFERENCE_SERVICE,))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = tls.add_port(server, address, state.settings.tls)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address} for gRPC: {exc}") from None
    if not bound:
        raise OSError(f"cannot listen on {address} for gRPC: the port is in use or the address is not local")
    await server.start()
    log.info("KServe v2 gRPC front listening on %s", address.rsplit(":", 1)[0] + f":{bound}")
    return server, bound, health
