"""The agent: ``inference.GRPCInferenceService`` in front of a replica's workers.

ModelInfer and ModelStreamInfer are registered with raw-bytes (de)serialisers:
the agent forwards request bytes to a worker and response bytes back, and
parses a request only when the capability query is not in the metadata.
Each request's :class:`~anyserve.protocol.RequestMeta` is read once, where
it arrives (gRPC metadata, or the router link's frame map), matched once
among the workers, and sent on to the chosen worker with the index of the
handler to run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from anyserve import tracing
from anyserve.candidates import FAILED
from anyserve.credentials import AUTHORIZATION, Credentials, from_bearer
from anyserve.delegation import Delegation
from anyserve.errors import AnyServeError, CapabilityNotFound, ResourceExhausted, Unavailable
from anyserve.metric_names import UNMATCHED
from anyserve.plugins import PluginManager
from anyserve.protocol import RequestMeta, final_error, final_marker, query_from_request
from anyserve.protocol import messages as pb
from anyserve.protocol.grpc_service import each_run, inference_handler
from anyserve.protocol.messages import parse_request
from anyserve.protocol.names import LOAD_KEY, STATUS_SERVICE
from anyserve.replica.load_report import ServiceTimes
from anyserve.replica.metrics import ReplicaMetrics
from anyserve.replica.pool import WorkerPool, WorkerSlot
from anyserve.transport import Query
from anyserve.version import __version__

if TYPE_CHECKING:
    from anyserve.replica.lifecycle import Lifecycle

log = logging.getLogger("anyserve.agent")

LIMIT_SETTING = "replica.max_message_bytes (ANYSERVE_MAX_MESSAGE_BYTES, --max-message-bytes)"

#: gRPC metadata, or the same pairs carried by the router link.
Metadata = Iterable[tuple[str, str]]
#: Forwards a delegated request: (delegation, payload, metadata) -> response bytes.
Forwarder = Callable[[Delegation, bytes, RequestMeta], Awaitable[bytes]]


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
        credentials: Credentials | None = None,
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
        #: Who may read this replica's status (the cluster token); None: anyone (``[cluster] auth = "off"``).
        self.credentials = credentials or Credentials(None, None)
        #: Prometheus metrics: each request counted once, under its handler's registered capability.
        self.metrics = ReplicaMetrics()
        #: Recent request durations per offer, reported to the router with each heartbeat.
        self.service_times = ServiceTimes()

    # -- gRPC plumbing -----------------------------------------------------

    def generic_handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        return (self._inference_handler(), self._status_handler())

    def _status_handler(self) -> grpc.GenericRpcHandler:
        async def get(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            # The status names workers, pids, resources and the link: cluster members only.
            given = dict(context.invocation_metadata() or ()).get(AUTHORIZATION)
            if not self.credentials.is_cluster(from_bearer(given)):
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "anyserve.ReplicaStatus needs the cluster token as 'authorization: Bearer <token>' metadata",
                )
            return json.dumps(self.status(), default=str).encode()

        return grpc.method_handlers_generic_handler(STATUS_SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)})

    def _inference_handler(self) -> grpc.GenericRpcHandler:
        return inference_handler(self)

    # -- health and metadata ------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    def is_ready(self) -> bool:
        """Serving, with something a request gets now or by starting it (KServe ``ServerReady``, health ``""``):
        a worker that answers, or a worker class that is not ``failed``. Workers restarting or not answering
        are still offered (``starting``, ``failed``), but do not make the replica ready."""
        if not self.ready:
            return False
        if self.pool.serving():
            return True
        lifecycle = self.lifecycle
        return lifecycle is not None and any(lifecycle.public_state(c) != FAILED for c in lifecycle.classes.values())

    async def server_ready(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.is_ready())

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="anyserve", version=__version__, extensions=["model_stream_infer"])

    @staticmethod
    def model_query(name: str, version: str, metadata: Metadata | None = ()) -> Query:
        """The query a KServe model name and version stand for, unless metadata names one."""
        return RequestMeta.from_metadata(metadata).query or query_from_request(name, version, {})

    def servable(self, query: Query, *, failed: bool = True) -> bool:
        """Served now by a running worker, or by a worker class that can start.

        ``failed=False`` leaves out worker classes in the ``failed`` state
        (health checking: they cannot serve until their retry).
        """
        for stream in (False, True):
            if self.pool.choose(query, stream=stream) is not None:
                return True
            worker_class = self.lifecycle.match(query, stream=stream) if self.lifecycle is not None else None
            if worker_class is not None and (failed or self.lifecycle.public_state(worker_class) != FAILED):  # type: ignore[union-attr]
                return True
        return False

    async def model_ready(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        query = self.model_query(request.name, request.version, context.invocation_metadata())
        return pb.ModelReadyResponse(ready=self.servable(query))

    def tensors(self, query: Query) -> dict[str, Any]:
        """The inputs and outputs the handler that would serve ``query`` declares (unary first)."""
        for stream in (False, True):
            chosen = self.pool.choose(query, stream=stream)
            if chosen is not None:
                slot, index = chosen
                return slot.tensors(index)
        return {"inputs": [], "outputs": []}

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        query = self.model_query(request.name, request.version, context.invocation_metadata())
        if not self.servable(query):
            await context.abort(grpc.StatusCode.NOT_FOUND, self._not_found(query).message)
        response = pb.ModelMetadataResponse(
            name=request.name, versions=[request.version] if request.version else [], platform="anyserve"
        )
        declared = self.tensors(query)
        for field in ("inputs", "outputs"):
            for tensor in declared.get(field, ()):
                getattr(response, field).add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        return response

    # -- inference ----------------------------------------------------------

    def _not_found(self, query: Query, reason: str = "", stream: bool | None = None) -> CapabilityNotFound:
        if stream is not None and self._offered(query, stream=not stream):
            kind = "a unary call, not as a stream" if stream else "a stream: call ModelStreamInfer"
            return CapabilityNotFound(f"{dict(query)} is served on replica {self.replica_id} only as {kind}")
        why = f"; not delegated: {reason}" if reason else ""
        return CapabilityNotFound(
            f"no capability matches {dict(query)} on replica {self.replica_id}; it offers: "
            f"{'; '.join(str(o) for o in self.offers()) or 'nothing'}{why}"
        )

    def _offered(self, query: Query, *, stream: bool) -> bool:
        if self.pool.choose(query, stream=stream) is not None:
            return True
        return self.lifecycle is not None and self.lifecycle.match(query, stream=stream) is not None

    def _check_size(self, what: str, size: int) -> None:
        if size > self.max_message_bytes:
            raise ResourceExhausted(
                f"{what} of {size} bytes exceeds the limit of {self.max_message_bytes} bytes set by {LIMIT_SETTING}"
            )

    @staticmethod
    def grpc_meta(context: grpc.aio.ServicerContext) -> RequestMeta:
        """A gRPC call's metadata, its deadline included, with a request id (the caller's, or a new one)."""
        meta = RequestMeta.from_metadata(context.invocation_metadata(), timeout=context.time_remaining())
        return meta.with_request_id()

    def load(self) -> tuple[int, int]:
        """Requests waiting (for a worker to start or return, or for a free slot in one) and requests out to workers."""
        waiting, in_flight = self.pool.load()
        return self.metrics.queued + waiting, in_flight

    def load_value(self) -> str:
        """:meth:`load` as answers carry it to the router (``queued,in_flight``), over gRPC or the link."""
        queued, in_flight = self.load()
        return f"{queued},{in_flight}"

    def _load_trailer(self) -> tuple[tuple[str, str]]:
        """The load every gRPC answer carries, so the router need not wait for a heartbeat to see a burst."""
        return ((LOAD_KEY, self.load_value()),)

    async def model_infer(self, payload: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            response = await self.infer(payload, self.grpc_meta(context))
        except AnyServeError as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.message, self._load_trailer())
            raise  # abort raises; this keeps type checkers honest
        context.set_trailing_metadata(self._load_trailer())
        return response

    async def infer(self, payload: bytes, meta: RequestMeta) -> bytes:
        """One unary request, whatever carried it (gRPC or the router link); raises :class:`AnyServeError`.

        Without a query in ``meta`` the request itself is parsed for one.
        """
        start = time.perf_counter()
        label, code = UNMATCHED, "OK"
        sampled = tracing.tracer is not None and tracing.sampled(meta.traceparent)
        span = self._span("agent infer", meta) if sampled else None
        traced = None if span is None else tracing.enter(span)
        try:
            self._check_size("request", len(payload))
            if not meta.query:
                request = parse_request(payload)
                meta = meta.with_query(
                    query_from_request(request.model_name, request.model_version, request.parameters)
                )
            chosen = await self._worker_for(meta, False)
            if chosen is None:
                return await self._delegate(payload, meta)
            slot, handler = chosen
            label = self.metrics.label(slot, handler)
            slot.last_used = time.monotonic()
            # A sampled request's worker span is a child of this one; otherwise the worker is sent no trace
            # fields at all, which it reads as "not sampled" (it never samples on its own).
            pairs = meta.to_metadata(handler=handler, trace=False)
            if traced is not None:
                pairs = tracing.with_current(pairs)
            sent = 0.0 if slot.full else time.perf_counter()  # a request that waits for a slot is not timed
            try:
                response = await slot.connection.infer(payload, dict(pairs))
            except Unavailable as exc:
                raise self._worker_lost(slot, meta, exc) from None
            finally:
                slot.last_used = time.monotonic()
            if sent:
                self.service_times.observe(slot.offer_keys[handler], time.perf_counter() - sent)
            self._check_size("response", len(response))
            return response
        except AnyServeError as exc:
            code = exc.code
            raise
        except BaseException:
            code = "CANCELLED"
            raise
        finally:
            self.metrics.answered(label, code, time.perf_counter() - start)
            if traced is not None:
                tracing.leave_with_code(traced, code)

    def _span(self, name: str, meta: RequestMeta) -> Any:
        """The agent's span for a sampled request: a child of the caller's (the router's) through ``traceparent``."""
        return tracing.start(name, meta, attributes={"anyserve.replica_id": self.replica_id})

    def _worker_lost(self, slot: WorkerSlot, meta: RequestMeta, exc: Unavailable) -> Unavailable:
        """A worker that died mid-request: its pid and socket go to the log, the caller gets what happened.

        An ``Unavailable`` the handler raised itself (its worker still up) is the handler's answer: kept.
        """
        if not slot.connection.closed:
            return exc
        log.warning("worker %s died during request %s: %s", slot.id, meta.request_id or "-", exc.message)
        return Unavailable(
            f"the worker serving {dict(meta.query)} stopped before it answered (request {meta.request_id or '-'}); "
            "the replica restarts it"
        )

    async def _worker_for(self, meta: RequestMeta, stream: bool) -> tuple[WorkerSlot, int] | None:
        """A running worker; else one on its way back (restarting, or not answering probes), waited for a
        bounded time; else a worker class started for this request (waiting up to its deadline)."""
        pool = self.pool
        chosen = pool.choose(meta.query, stream=stream)
        if chosen is not None:
            return chosen
        metrics = self.metrics
        metrics.queued += 1
        try:
            if pool.coming(meta.query, stream=stream) is not None:
                return await pool.wait_for(meta, stream=stream)  # "not now", never a delegation away
            if self.lifecycle is not None:
                chosen = await self.lifecycle.acquire(meta.query, stream=stream, timeout=meta.timeout())
        finally:
            metrics.queued -= 1
        return chosen

    async def _delegate(self, payload: bytes, meta: RequestMeta) -> bytes:
        query = meta.query
        decision: Delegation | None = self.pm.hook.anyserve_delegate(
            query=dict(query), origin=self.replica_id, depth=meta.depth, router_url=self.router_url
        )
        if decision is None or decision.refused:
            raise self._not_found(query, decision.reason if decision else "no delegation policy answered", False)
        if self.forward is None:
            raise self._not_found(query, "this replica cannot forward requests (no router client)")
        log.info("delegating %s to %s (request %s)", dict(query), decision.url, meta.request_id or "-")
        return await self.forward(decision, payload, meta)

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        meta = self.grpc_meta(context)
        async for response in each_run(requests, lambda payload: self.stream(payload, meta)):
            yield response
        context.set_trailing_metadata(self._load_trailer())

    async def stream(self, payload: bytes, meta: RequestMeta) -> AsyncIterator[bytes]:
        """One streaming request's run of responses, the last one flagged final (errors included)."""
        try:
            self._check_size("request", len(payload))
            request = parse_request(payload)
        except AnyServeError as exc:
            yield final_error(exc.code, exc.message, "")
            return
        if not meta.query:
            meta = meta.with_query(query_from_request(request.model_name, request.model_version, request.parameters))
        start = time.perf_counter()
        label, code = UNMATCHED, "CANCELLED"
        sampled = tracing.tracer is not None and tracing.sampled(meta.traceparent)
        traced = self._span("agent stream", meta) if sampled else None
        try:
            try:
                chosen = await self._worker_for(meta, True)
                if chosen is None:
                    raise self._not_found(meta.query, stream=True)
                slot, handler = chosen
                label = self.metrics.label(slot, handler)
                slot.last_used = time.monotonic()
                pairs = meta.to_metadata(handler=handler, trace=False)  # as in infer()
                if traced is not None:
                    pairs = tracing.pairs_of(traced, pairs)
                fields = dict(pairs)
                sent = 0.0 if slot.full else time.perf_counter()  # a run that waits for a slot is not timed
                try:
                    async with contextlib.aclosing(slot.connection.stream(payload, fields)) as chunks:
                        async for chunk in chunks:
                            yield chunk
                except Unavailable as exc:
                    raise self._worker_lost(slot, meta, exc) from None
                finally:
                    slot.last_used = time.monotonic()  # in use until the run ends, however it ends
                if sent:
                    self.service_times.observe(slot.offer_keys[handler], time.perf_counter() - sent)
            except AnyServeError as exc:
                code = exc.code
                yield final_error(exc.code, exc.message, request.id)
                return
            code = "OK"
            yield final_marker(request.id)
        finally:
            self.metrics.answered(label, code, time.perf_counter() - start)
            if traced is not None:
                tracing.end(traced, code)
